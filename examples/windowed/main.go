// Command windowed counts clicks per page per minute of event time, and
// writes each count once, when its minute is over: a tumbling window of
// one minute with final results only.
//
//	clicks (key page, JSON with the click's time) ──count per page per minute──> page-clicks-per-minute
//	                              (window store "clicks-per-minute", changelog windowed-clicks-per-minute-changelog)
//
// Run the demo (an embedded broker, sample clicks, the output printed):
//
//	go run ./examples/windowed --demo
//
// # What the output means
//
// page-clicks-per-minute has one record per page and minute, keyed by
// page, valued with JSON: {"page", "start", "end", "clicks"}, the minute
// being [start, end). A minute's count is written once, when the minute
// is over in event time: when the clicks of its partition reach its end
// plus a grace of 10 seconds, so that clicks arriving up to 10 seconds out
// of order still count. A click that arrives later than that, for a minute
// already written, is not counted: it is dropped and counted in the
// runner's samsa_dropped_records_total{reason="late"} metric. The record's
// timestamp is that of the minute's last click.
//
// Time is the click's own "at" field (stream.EventTime), not when it
// reached Kafka, so replaying the log gives the same counts, and a minute
// is only over once later clicks say so: the last minute of each page
// stays open until clicks after it (plus grace) arrive. In the demo the
// last clicks, at 12:03:30, close every minute up to 12:03 and leave that
// one open.
//
// The sample holds a click 5 seconds out of order (/docs at 12:00:57,
// after clicks at 12:01:02), which counts, and one 60 seconds late (/home
// at 12:00:50, after /home's clicks at 12:01:50), which does not.
//
// Clicks are keyed by page, so every click of a page is in one partition
// and the count needs no repartition: each task sees its clicks in log
// order, and the output is a function of the log. Counting by something
// the producer did not key by goes through a repartition topic
// (operators.GroupBy), whose partitions merge several upstream tasks'
// writes in the order they arrive; a grace at least as long as those tasks
// may lag behind each other keeps that order from making clicks late.
//
// Run it for real on the embedded broker and feed it with kcat:
//
//	go run ./examples/windowed create-topics
//	go run ./examples/windowed run &
//	echo '/home:{"at":"2024-05-01T12:00:05Z","user":"ann"}' | kcat -P -b 127.0.0.1:9092 -t clicks -K:
//	kcat -C -b 127.0.0.1:9092 -t page-clicks-per-minute -X isolation.level=read_committed -f '%k %s\n'
package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Click is a click on a page, keyed by the page's path.
type Click struct {
	At   time.Time `json:"at"`
	User string    `json:"user"`
}

// PageCount is the number of clicks on a page in a minute [Start, End).
type PageCount struct {
	Page   string    `json:"page"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Clicks int64     `json:"clicks"`
}

// Grace is how late, in event time, a click may arrive and still count.
const Grace = 10 * time.Second

// Job builds the windowed job.
func Job() *stream.Job {
	job := stream.NewJob("windowed")
	clicks := stream.Input(job, "clicks", serde.String, serde.JSON[Click](),
		stream.EventTime(func(_ string, c Click) time.Time { return c.At }))
	byPage := operators.GroupByKey(clicks, serde.String, serde.JSON[Click]())
	counts := operators.WindowedCount(byPage, "clicks-per-minute",
		operators.Tumbling(time.Minute).WithGrace(Grace).EmitFinal())
	perPage := operators.Map(counts.ToStream(), func(w stream.Windowed[string], n int64) (string, PageCount) {
		return w.Key, PageCount{Page: w.Key, Start: w.Window.Start.UTC(), End: w.Window.End.UTC(), Clicks: n}
	})
	stream.Output(perPage, "page-clicks-per-minute", serde.String, serde.JSON[PageCount]())
	return job
}

func main() {
	runner.Main(Job(), runner.WithDemo(runner.Demo{Seed: seed, Show: show}))
}

// Sample is the demo's input: clicks in the order they are written.
func Sample() []stream.KeyValue[string, Click] {
	at := func(hms string) time.Time {
		t, err := time.Parse(time.RFC3339, "2024-05-01T"+hms+"Z")
		if err != nil {
			panic(err)
		}
		return t
	}
	var out []stream.KeyValue[string, Click]
	for _, c := range []struct{ page, at, user string }{
		{"/home", "12:00:05", "ann"},
		{"/pricing", "12:00:12", "bob"},
		{"/home", "12:00:20", "chen"},
		{"/docs", "12:00:31", "ann"},
		{"/home", "12:00:48", "dara"},
		{"/pricing", "12:00:59", "ann"},
		{"/home", "12:01:02", "bob"},
		{"/docs", "12:00:57", "chen"}, // 5s out of order: within grace, counts
		{"/pricing", "12:01:15", "dara"},
		{"/home", "12:01:40", "ann"},
		{"/docs", "12:01:44", "bob"},
		{"/home", "12:01:50", "chen"},
		{"/home", "12:00:50", "eve"}, // 60s behind /home: its minute is over, dropped
		{"/pricing", "12:02:05", "ann"},
		{"/docs", "12:02:30", "dara"},
		{"/home", "12:02:31", "bob"},
		{"/home", "12:03:30", "ann"}, // these close the minutes up to 12:03
		{"/pricing", "12:03:30", "chen"},
		{"/docs", "12:03:30", "dara"},
	} {
		out = append(out, stream.KV(c.page, Click{At: at(c.at), User: c.user}))
	}
	return out
}

func seed(emit func(topic string, rec stream.RawRecord)) {
	for _, kv := range Sample() {
		v, err := json.Marshal(kv.Value)
		if err != nil {
			panic(err)
		}
		emit("clicks", stream.RawRecord{Key: []byte(kv.Key), Value: v})
	}
}

func show(_ string, r stream.RawRecord) string {
	var pc PageCount
	if err := json.Unmarshal(r.Value, &pc); err != nil {
		return fmt.Sprintf("%s %q", r.Key, r.Value)
	}
	noun := "clicks"
	if pc.Clicks == 1 {
		noun = "click"
	}
	return fmt.Sprintf("%-9s %s-%s  %d %s", pc.Page, pc.Start.Format("15:04"), pc.End.Format("15:04"), pc.Clicks, noun)
}
