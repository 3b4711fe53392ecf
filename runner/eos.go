package runner

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Exactly-once processing (Config.Processing = ExactlyOnce).
//
// Each commit is one Kafka transaction of the instance's transactional
// producer: the outputs emitted since the last commit, the changelog
// records the stores write at commit, and the input offsets (with the
// changelog offsets as commit metadata, as under at-least-once) commit or
// abort together. The offsets are committed with the group generation
// (KIP-447): an instance that lost its tasks, a zombie, cannot commit, and
// its transaction aborts instead.
//
// Local state follows the same protocol as under at-least-once: store
// writes stay in the task's record cache (read-your-writes) until the
// transaction commits, and are applied to Pebble with their changelog
// offsets only then. An abort drops them: every task is closed and opened
// again from its local store, which holds exactly the last committed
// state, and input rewinds to the committed offsets. A crash between the
// commit and the local apply leaves the local store behind the committed
// changelog offset: the restore reads the missing tail.
//
// Rebalances wait for the open transaction: the loop allows them only
// between transactions, and commits at once when the client reports a
// rebalance waiting, so a revoked task never has uncommitted work and a
// rebalance costs no aborted work.
//
// franz-go's GroupTransactSession is not used: it aborts the transaction
// on every rebalance, and its commit waits for a heartbeat that cannot
// happen while rebalance callbacks are held back by BlockRebalanceOnPoll,
// which the runner needs to keep callbacks out of processing. The pieces
// it is built from are public: the transactional producer, and the
// AddOffsetsToTxn and TxnOffsetCommit requests.

// txnState is a member's transaction state.
type txnState struct {
	open             bool         // a transaction is open (under member.mu)
	records          atomic.Int64 // records produced since it opened
	rebalanceWaiting atomic.Bool  // the client holds rebalance callbacks back
}

// commitTimeout bounds a commit under exactly-once.
const commitTimeout = 30 * time.Second

// minTransactionTimeout is the transaction timeout for short commit
// intervals: how long the brokers keep a transaction of a crashed instance
// open (holding back read_committed readers of its topics) before they
// abort it. A restarted instance aborts it at once: its transactional ID
// is stable.
const minTransactionTimeout = 10 * time.Second

func (m *member) exactlyOnce() bool { return m.r.cfg.Processing == ExactlyOnce }

// transactionalOpts are the client options of the transactional producer.
func (m *member) transactionalOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.TransactionalID(m.r.cfg.TransactionalID),
		kgo.TransactionTimeout(max(minTransactionTimeout, 3*m.r.cfg.CommitInterval)),
		kgo.OnPartitionsCallbackBlocked(func(context.Context, *kgo.Client) {
			m.txn.rebalanceWaiting.Store(true)
			m.wake() // commit now rather than at the end of the interval
		}),
	}
}

// beginLocked opens a transaction, unless one is open. Opening one costs
// nothing: the brokers learn of it with its first write.
func (m *member) beginLocked(context.Context) error {
	if !m.exactlyOnce() || m.txn.open {
		return nil
	}
	if err := m.cl.BeginTransaction(); err != nil {
		return fmt.Errorf("runner: begin transaction: %w", err)
	}
	m.txn.open = true
	m.txn.records.Store(0)
	return nil
}

// txnIdleLocked reports whether no transaction holds uncommitted work, so
// that tasks may move to other instances.
func (m *member) txnIdleLocked() bool {
	return !m.exactlyOnce() || !m.txn.open || (m.txn.records.Load() == 0 && len(m.changedLocked()) == 0)
}

// endTxnLocked commits the open transaction with the input offsets of
// tasks. It reports false, with no error, if the group refused the offsets
// (this instance no longer owns the tasks): then the transaction aborts
// and every task starts again from the last commit.
func (m *member) endTxnLocked(ctx context.Context, tasks []*task) (bool, error) {
	if m.txn.records.Load() == 0 {
		// Nothing written, so no output and no state change: the
		// offsets alone commit, outside the transaction, which the
		// brokers never opened.
		m.txn.open = false
		if err := m.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			return false, transactionError(m.r.cfg.TransactionalID, err)
		}
		ok, err := m.commitOffsetsLocked(ctx, tasks)
		if !ok && err == nil && len(tasks) > 0 {
			m.resetTasksLocked(ctx)
		}
		return ok, err
	}
	if len(tasks) > 0 {
		err := m.commitTxnOffsets(ctx, tasks)
		if isFencedByGroup(err) {
			m.log.Warn("transaction aborted: the group refused its offsets (a rebalance moved the tasks, or this instance was paused past its session timeout and fenced); processing again from the last commit",
				"error", err)
			return false, m.abortLocked(ctx, nil)
		}
		if err != nil {
			return false, m.abortLocked(ctx, fmt.Errorf("runner: commit offsets in the transaction: %w", err))
		}
	}
	m.txn.open = false
	err := m.cl.EndTransaction(ctx, kgo.TryCommit)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, kerr.OperationNotAttempted), errors.Is(err, kerr.TransactionAbortable):
		m.log.Warn("transaction aborted by the brokers; processing again from the last commit", "error", err)
		m.txn.open = true
		return false, m.abortLocked(ctx, nil)
	default:
		return false, transactionError(m.r.cfg.TransactionalID, err)
	}
}

// commitTxnOffsets adds the input offsets of tasks, with their commit
// metadata, to the open transaction.
func (m *member) commitTxnOffsets(ctx context.Context, tasks []*task) error {
	id, epoch, err := m.cl.ProducerID(ctx)
	if err != nil {
		return err
	}
	group := m.r.topo.Name()
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = m.r.cfg.TransactionalID, id, epoch, group
	if err := retryConcurrentTxn(ctx, func() error {
		resp, err := add.RequestWith(ctx, m.cl)
		if err != nil {
			return err
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}); err != nil {
		return fmt.Errorf("add offsets to transaction: %w", err)
	}

	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = m.r.cfg.TransactionalID, group, id, epoch
	req.MemberID, req.Generation = m.cl.GroupMetadata()
	topics := map[string]int{}
	for _, t := range tasks {
		meta := m.commitMeta(t)
		for _, in := range t.inputs {
			if in.next.Offset < 0 {
				continue
			}
			i, ok := topics[in.topic]
			if !ok {
				i = len(req.Topics)
				topics[in.topic] = i
				rt := kmsg.NewTxnOffsetCommitRequestTopic()
				rt.Topic, rt.TopicID = in.topic, m.topicIDs[in.topic]
				req.Topics = append(req.Topics, rt)
			}
			rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch, rp.Metadata = t.ID().Partition, in.next.Offset, in.next.Epoch, meta
			req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
		}
	}
	return retryConcurrentTxn(ctx, func() error {
		resp, err := req.RequestWith(ctx, m.cl)
		if err != nil {
			return err
		}
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if e := kerr.ErrorForCode(rp.ErrorCode); e != nil {
					err = errors.Join(err, fmt.Errorf("%s/%d: %w", rt.Topic, rp.Partition, e))
				}
			}
		}
		return err
	})
}

// retryConcurrentTxn runs fn until it does not fail with
// CONCURRENT_TRANSACTIONS: the brokers still finishing the previous
// transaction's markers.
func retryConcurrentTxn(ctx context.Context, fn func() error) error {
	backoff := 5 * time.Millisecond
	for {
		err := fn()
		if !errors.Is(err, kerr.ConcurrentTransactions) {
			return err
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// isFencedByGroup reports whether the group refused a commit because this
// member is not, or no longer, the owner of its tasks.
func isFencedByGroup(err error) bool {
	return errors.Is(err, kerr.IllegalGeneration) || errors.Is(err, kerr.UnknownMemberID) ||
		errors.Is(err, kerr.FencedInstanceID) || errors.Is(err, kerr.RebalanceInProgress) ||
		errors.Is(err, kerr.StaleMemberEpoch) || errors.Is(err, kerr.GroupIDNotFound)
}

// abortLocked aborts the open transaction, if any, starts every task again
// from the last commit, and returns err.
func (m *member) abortLocked(ctx context.Context, err error) error {
	if !m.exactlyOnce() || !m.txn.open {
		return err
	}
	m.txn.open = false
	m.r.metrics.aborts.Inc()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
	defer cancel()
	if aerr := m.cl.AbortBufferedRecords(ctx); aerr != nil {
		return errors.Join(err, fmt.Errorf("runner: abort transaction: %w", aerr))
	}
	if aerr := m.cl.EndTransaction(ctx, kgo.TryAbort); aerr != nil {
		return errors.Join(err, transactionError(m.r.cfg.TransactionalID, aerr))
	}
	m.resetTasksLocked(ctx)
	return err
}

// transactionError explains an error ending a transaction.
func transactionError(id string, err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
		return fmt.Errorf("runner: transactional id %q was fenced: another instance runs with the same id (give each instance its own --state-dir or --transactional-id), or this one was paused past the transaction timeout: %w", id, err)
	}
	return fmt.Errorf("runner: end transaction: %w", err)
}

// resetTasksLocked drops what the tasks did since the last commit: it
// closes them and opens them again, to restore from their local stores and
// changelogs, and rewinds their inputs to the committed offsets.
func (m *member) resetTasksLocked(ctx context.Context) {
	parts := map[string][]int32{}
	for _, id := range slices.SortedFunc(maps.Keys(m.tasks), compareTaskIDs) {
		for _, in := range m.tasks[id].inputs {
			parts[in.topic] = append(parts[in.topic], id.Partition)
		}
	}
	if len(parts) == 0 {
		return
	}
	m.dropLocked(parts, "closed after an aborted transaction")
	if err := m.rewind(ctx, parts); err != nil {
		m.fail(err)
		return
	}
	m.assignLocked(ctx, parts, "tasks reopened after an aborted transaction")
}

// rewind makes the consumer fetch parts from their committed offsets (the
// start of the partition where none is committed).
func (m *member) rewind(ctx context.Context, parts map[string][]int32) error {
	committed, err := m.fetchStableOffsets(ctx)
	if err != nil {
		return err
	}
	starts, err := m.adm.ListStartOffsets(ctx, slices.Collect(maps.Keys(parts))...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("runner: rewind after an aborted transaction: list start offsets: %w", err)
	}
	set := map[string]map[int32]kgo.EpochOffset{}
	for topic, ps := range parts {
		set[topic] = map[int32]kgo.EpochOffset{}
		for _, p := range ps {
			at := kgo.EpochOffset{Epoch: -1}
			if o, ok := committed.Lookup(topic, p); ok && o.Err == nil && o.At >= 0 {
				at = kgo.EpochOffset{Epoch: o.LeaderEpoch, Offset: o.At}
			} else if s, ok := starts.Lookup(topic, p); ok {
				at.Offset = s.Offset
			}
			set[topic][p] = at
		}
	}
	m.cl.SetOffsets(set)
	return nil
}

// fetchStableOffsets returns the group's committed offsets once no
// transaction that commits offsets of the group is pending (a previous
// owner's, under exactly-once): the restore must know which changelog
// offset the committed input offsets go with.
func (m *member) fetchStableOffsets(ctx context.Context) (kadm.OffsetResponses, error) {
	backoff := 10 * time.Millisecond
	for {
		committed, err := m.adm.FetchOffsets(kadm.RequireStable(ctx), m.r.topo.Name())
		if err == nil {
			err = committed.Error()
		}
		if !errors.Is(err, kerr.UnstableOffsetCommit) {
			if err != nil {
				return nil, fmt.Errorf("runner: fetch committed offsets of group %q: %w", m.r.topo.Name(), err)
			}
			return committed, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}
