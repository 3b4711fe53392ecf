package runner

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/samsa-go/samsa/connectors/kafka"
)

// What a job needs its brokers' ACLs to grant it (the README's "Security"
// section lists them for operators):
//
//	topic Read              its input topics (Describe is implied)
//	topic Write             its output topics
//	topic Create, Read, Write its changelog, repartition and dead-letter topics
//	group Read              its consumer group, named after the job
//	cluster IdempotentWrite or Write on a topic: the idempotent producer
//	transactional id Write  under exactly-once, --transactional-id
//	topic DeleteRecords     replay, on repartition topics
//
// A refusal stops the job with a *kafka.DeniedError naming the resource:
// waiting does not cure it (see permanent).

// denied explains err, met doing op (Read, Write, Create, Describe) on
// topic, if it is an authorization error: a *kafka.DeniedError naming the
// resource the brokers refused. topic may be empty when the failed
// request named no one topic: a topic refusal then stays as it is. Other
// errors are returned unchanged.
func (r *Runner) denied(err error, topic, op string) error {
	if err == nil || !kafka.IsDenied(err) {
		return err
	}
	var de *kafka.DeniedError
	if errors.As(err, &de) {
		return err
	}
	user := r.cfg.SASL.User
	switch {
	case errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return kafka.Denied(err, "transactional id", r.cfg.TransactionalID, "Write", user)
	case errors.Is(err, kerr.GroupAuthorizationFailed):
		return kafka.Denied(err, "group", r.topo.Name(), "Read", user)
	case topic != "":
		return kafka.Denied(err, "topic", topic, op, user)
	case errors.Is(err, kerr.ClusterAuthorizationFailed):
		return kafka.Denied(err, "cluster", "", "IdempotentWrite", user)
	}
	return err
}

// deniedTopic finds which of topics the brokers refuse to describe, after
// a metadata request for all of them failed with err, an authorization
// error that does not say which (kadm's): it asks for each topic alone.
// need says what the job needs on the topic, by topic, such as "Read".
func (r *Runner) deniedTopic(ctx context.Context, adm *kadm.Client, err error, topics []string, need func(string) string) error {
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		return r.denied(err, "", "")
	}
	for _, t := range topics {
		_, terr := adm.ListTopics(ctx, t)
		if terr == nil {
			continue
		}
		if errors.Is(terr, kerr.TopicAuthorizationFailed) {
			de := kafka.Denied(terr, "topic", t, "Describe", r.cfg.SASL.User).(*kafka.DeniedError)
			de.Need = "the job needs " + need(t) + " on it, which implies Describe"
			return de
		}
	}
	return err
}
