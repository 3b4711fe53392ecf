package embedded

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// cleanStopFile, in a data directory, says that the broker stopped
// cleanly; it is removed while the broker runs.
const cleanStopFile = "samsa-clean-stop"

// recoverTimeout bounds the repair of a data directory after a crash.
const recoverTimeout = 5 * time.Minute

// closeOpenTransactions repairs what a broker killed while transactions
// were open leaves in its data directory. kfake aborts those transactions
// when it loads the directory again, but writes no abort marker to their
// partitions: a read_committed reader, which skips a producer's records
// from the start of an aborted transaction until that producer's abort
// marker, then skips every later record of the producer too, committed or
// not. So after an unclean stop this loads the directory in a broker of
// its own, on a loopback port nobody else knows, finds the transactions
// left without an end marker, writes their abort markers, and stops that
// broker cleanly; Start then starts the real one.
func closeOpenTransactions(dir string, log hclog.Logger) error {
	if _, err := os.Stat(filepath.Join(dir, "meta.json")); errors.Is(err, os.ErrNotExist) {
		return nil // a new data directory
	}
	clean := filepath.Join(dir, cleanStopFile)
	if err := os.Remove(clean); err == nil {
		return nil // stopped cleanly
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("embedded: data directory %s: %w", dir, err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DataDir(dir))
	if err != nil {
		return fmt.Errorf("embedded: load data directory %s after an unclean stop: %w", dir, err)
	}
	defer c.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.KeepControlRecords())
	if err != nil {
		return fmt.Errorf("embedded: repair data directory %s: %w", dir, err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), recoverTimeout)
	defer cancel()
	open, err := openTransactions(ctx, cl)
	if err != nil {
		return fmt.Errorf("embedded: repair data directory %s after an unclean stop: %w", dir, err)
	}
	if len(open) == 0 {
		return nil
	}
	req := kmsg.NewPtrWriteTxnMarkersRequest()
	parts := 0
	for txn, tps := range open {
		m := kmsg.NewWriteTxnMarkersRequestMarker()
		m.ProducerID, m.ProducerEpoch, m.Committed = txn.pid, txn.epoch, false
		for topic, ps := range tps {
			mt := kmsg.NewWriteTxnMarkersRequestMarkerTopic()
			mt.Topic, mt.Partitions = topic, ps
			m.Topics = append(m.Topics, mt)
			parts += len(ps)
		}
		req.Markers = append(req.Markers, m)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return fmt.Errorf("embedded: repair data directory %s: write abort markers: %w", dir, err)
	}
	for _, m := range resp.Markers {
		for _, t := range m.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return fmt.Errorf("embedded: repair data directory %s: abort marker of producer %d on %s/%d: %w", dir, m.ProducerID, t.Topic, p.Partition, err)
				}
			}
		}
	}
	if log != nil {
		log.Warn("the broker stopped uncleanly with transactions open: wrote their abort markers",
			"data_dir", dir, "transactions", len(open), "partitions", parts)
	}
	return nil
}

type producerEpoch struct {
	pid   int64
	epoch int16
}

// openTransactions reads every partition and returns, per producer and
// epoch, the partitions where a transaction has records but no end
// marker.
func openTransactions(ctx context.Context, cl *kgo.Client) (map[producerEpoch]map[string][]int32, error) {
	adm := kadm.NewClient(cl)
	starts, err := adm.ListStartOffsets(ctx)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	ends, err := adm.ListEndOffsets(ctx)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	from := map[string]map[int32]kgo.Offset{}
	left := map[string]map[int32]int64{}
	ends.Each(func(e kadm.ListedOffset) {
		s, ok := starts.Lookup(e.Topic, e.Partition)
		if !ok || s.Offset >= e.Offset {
			return
		}
		if from[e.Topic] == nil {
			from[e.Topic], left[e.Topic] = map[int32]kgo.Offset{}, map[int32]int64{}
		}
		from[e.Topic][e.Partition] = kgo.NewOffset().At(s.Offset)
		left[e.Topic][e.Partition] = e.Offset
	})
	if len(from) == 0 {
		return nil, nil
	}
	cl.AddConsumePartitions(from)
	type tp struct {
		topic string
		part  int32
	}
	open := map[tp]map[int64]int16{} // producer ID -> epoch of its open transaction
	for len(left) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read the partitions: %w", err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("read %s/%d: %w", t, p, err) })
		if ferr != nil {
			return nil, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			switch {
			case r.Attrs.IsControl():
				delete(open[k], r.ProducerID)
			case r.Attrs.IsTransactional():
				if open[k] == nil {
					open[k] = map[int64]int16{}
				}
				open[k][r.ProducerID] = r.ProducerEpoch
			}
			if end, ok := left[r.Topic][r.Partition]; ok && r.Offset+1 >= end {
				delete(left[r.Topic], r.Partition)
				if len(left[r.Topic]) == 0 {
					delete(left, r.Topic)
				}
			}
		})
	}
	out := map[producerEpoch]map[string][]int32{}
	for k, pids := range open {
		for pid, epoch := range pids {
			pe := producerEpoch{pid, epoch}
			if out[pe] == nil {
				out[pe] = map[string][]int32{}
			}
			out[pe][k.topic] = append(out[pe][k.topic], k.part)
		}
	}
	return out, nil
}
