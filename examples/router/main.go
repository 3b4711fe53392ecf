// Command router is a samsa job written with the low-level Task API
// (Samza's StreamTask): one Task per partition sees the raw records of its
// input topic and writes each one, unchanged, to the topic for its event
// type, with a header saying which task routed it.
//
//	events ──┬── type "click"    ──> events-click
//	         ├── type "purchase" ──> events-purchase
//	         └── anything else   ──> events-other (with header "reason")
//
// Run the demo (an embedded broker, sample input, the output printed):
//
//	go run ./examples/router --demo
package main

import (
	"encoding/json"

	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
)

// Outputs by event type.
var routes = map[string]string{
	"click":    "events-click",
	"purchase": "events-purchase",
}

const other = "events-other"

// router is the Task of one partition.
type router struct {
	routed string // the task ID, for the header
}

// Init implements stream.Initializer.
func (r *router) Init(ctx stream.Context) error {
	r.routed = ctx.TaskID().String()
	return nil
}

// Process implements stream.Task.
func (r *router) Process(ctx stream.Context, rec stream.RawRecord) error {
	var ev struct {
		Type string `json:"type"`
	}
	out := rec
	out.Headers = append(append([]stream.Header(nil), rec.Headers...), stream.Header{Key: "routed-by", Value: []byte(r.routed)})
	topic := other
	if err := json.Unmarshal(rec.Value, &ev); err != nil {
		out.Headers = append(out.Headers, stream.Header{Key: "reason", Value: []byte("not JSON")})
	} else if t, ok := routes[ev.Type]; ok {
		topic = t
	} else {
		out.Headers = append(out.Headers, stream.Header{Key: "reason", Value: []byte("unknown type " + ev.Type)})
	}
	return ctx.Emit(topic, out)
}

// Job builds the router job.
func Job() *stream.Job {
	job := stream.NewJob("router")
	stream.AddTask(job, stream.TaskSpec{
		Name:    "router",
		Inputs:  []string{"events"},
		Outputs: []string{"events-click", "events-purchase", other},
		New:     func() stream.Task { return new(router) },
	})
	return job
}

func main() {
	runner.Main(Job(), runner.WithDemo(runner.Demo{Seed: seed}))
}

func seed(emit func(topic string, rec stream.RawRecord)) {
	events := []string{
		`{"type":"click","user":"ann","target":"/pricing"}`,
		`{"type":"purchase","user":"ann","sku":"pro-plan"}`,
		`{"type":"click","user":"bob","target":"/docs"}`,
		`{"type":"refund","user":"chen","sku":"pro-plan"}`,
		`not an event`,
		`{"type":"click","user":"chen","target":"/blog"}`,
	}
	users := []string{"ann", "ann", "bob", "chen", "", "chen"}
	for i, e := range events {
		var key []byte
		if users[i] != "" {
			key = []byte(users[i])
		}
		emit("events", stream.RawRecord{Key: key, Value: []byte(e)})
	}
}
