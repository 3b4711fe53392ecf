package state

import (
	"fmt"

	"github.com/samsa-go/samsa/stream"
)

// recordLimit is the largest record a store's changelog topic accepts.
type recordLimit struct {
	topic    string
	maxBytes int // 0: no limit
}

// SetRecordLimit sets the size of the largest record the changelog topic
// of store accepts, as a record batch of one (see
// [stream.RecordBatchSize]); 0, the default, means no limit. A Put whose
// key and value would make a larger changelog record fails with a
// [*stream.RecordTooLargeError], so that the record being processed fails
// (and is handled by the job's error policy) rather than the changelog
// write at the next commit, when no single input record is to blame.
func (ts *TaskStores) SetRecordLimit(store, topic string, maxBytes int) error {
	s := ts.stores[store]
	if s == nil {
		return fmt.Errorf("state: no store %q", store)
	}
	s.limit = recordLimit{topic: topic, maxBytes: maxBytes}
	return nil
}

func (s *Store) checkSize(key, value []byte) error {
	if s.limit.maxBytes <= 0 {
		return nil
	}
	if n := stream.RecordBatchSize(key, value, nil); n > s.limit.maxBytes {
		return fmt.Errorf("state: put to store %s: %w", s.name,
			&stream.RecordTooLargeError{Topic: s.limit.topic, Size: n, Max: s.limit.maxBytes})
	}
	return nil
}
