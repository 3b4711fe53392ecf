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
	// abortedBy is the first write error that said the brokers aborted
	// the open transaction (see abortedByBrokers): the loop aborts it too
	// and starts again from the last commit.
	abortedBy atomic.Pointer[error]
}

// abortLater notes that the open transaction must abort, for err: the
// loop aborts it (see recoverAbortedLocked) as soon as the brokers answer,
// and starts every task again from the last commit.
func (m *member) abortLater(err error, why string) {
	if m.txn.abortedBy.CompareAndSwap(nil, &err) {
		m.log.Warn(why+"; processing again from the last commit", "error", err)
	}
}

// abortedByBrokers reports whether err, failing a write of the open
// transaction, means that the brokers aborted it and moved the producer
// to a new epoch: what a broker does to the transactions it finds open
// when it restarts after a crash, and to one past its timeout. The
// producer recovers by aborting (KIP-360, KIP-588), which starts a new
// epoch. Another instance with the same transactional ID shows instead as
// PRODUCER_FENCED, which stops the job.
func abortedByBrokers(err error) bool {
	return errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.UnknownProducerID) ||
		errors.Is(err, kerr.InvalidProducerIDMapping) || errors.Is(err, kerr.TransactionAbortable)
}

// recoverAbortedLocked aborts the open transaction if the brokers aborted
// it (see abortedByBrokers), and starts every task again from the last
// commit. It reports whether it did.
func (m *member) recoverAbortedLocked(ctx context.Context) (bool, error) {
	if m.txn.abortedBy.Load() == nil {
		return false, nil
	}
	m.txn.open = true // for abortLocked
	err := m.abortLocked(ctx, nil)
	if m.txn.open {
		return true, err // the brokers are down: again on the next round
	}
	m.txn.abortedBy.Store(nil)
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) {
		// The client takes the brokers' new epoch as fatal (KIP-890
		// transactions): Run starts a new one.
		err = fmt.Errorf("%w: %w", errProducerReplaced, err)
	}
	return true, err
}

// errProducerReplaced stops the loop of a member whose transactional
// producer the brokers fenced after they aborted its transaction (see
// recoverAbortedLocked): Run goes on with a new client.
var errProducerReplaced = errors.New("runner: the brokers aborted the transaction and fenced the producer")

// resetMember readies the member to run again with a new client, once
// its loop has stopped and shut down (its tasks closed).
func (m *member) resetMember() {
	m.txn.open = false
	m.txn.records.Store(0)
	m.txn.rebalanceWaiting.Store(false)
	m.txn.abortedBy.Store(nil)
	m.produceErr.Store(nil)
	m.restorePending.Store(false)
	m.backlog.Store(false)
	m.assignedOnce = false
	m.paused = nil
	m.rewinds = nil
	m.backoff = 0
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
		if transient(err) {
			m.abortLater(err, "transaction aborted: its offsets could not reach the brokers")
			return false, nil
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
	case transient(err):
		// Whether it committed is unknown. Aborting once the brokers
		// answer reloads the producer ID, which aborts it if it is
		// still open; the tasks then start again from the committed
		// offsets, which tell.
		m.txn.open = true
		m.abortLater(err, "transaction commit unconfirmed: the brokers cannot be reached; it is aborted once they answer")
		return false, nil
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
		if transient(aerr) {
			// Still open: the loop aborts it once the brokers
			// answer, and nothing begins another meanwhile.
			m.txn.open = true
			m.abortLater(aerr, "transaction abort failed: the brokers cannot be reached; retrying once they answer")
			return err
		}
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
	// The loop rewinds the inputs before it polls again, outwaiting the
	// brokers if they are down (an abort is often why).
	for topic, ps := range parts {
		if m.rewinds == nil {
			m.rewinds = map[string][]int32{}
		}
		m.rewinds[topic] = append(m.rewinds[topic], ps...)
	}
	m.assignLocked(ctx, parts, "tasks reopened after an aborted transaction")
	m.wake()
}

// rewindLocked rewinds the inputs of the tasks reopened after an aborted
// transaction (see resetTasksLocked) to their committed offsets.
func (m *member) rewindLocked(ctx context.Context) error {
	if len(m.rewinds) == 0 {
		return nil
	}
	if err := m.rewind(ctx, m.rewinds); err != nil {
		return err
	}
	m.rewinds = nil
	return nil
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
