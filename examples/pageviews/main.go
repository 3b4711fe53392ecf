// Command pageviews is a stateless samsa job: it reads JSON page views,
// routes the ones that do not parse to a side topic, drops views by bots,
// and writes the rest keyed by user, so that all views of one user land in
// one partition, ready for per-user processing downstream.
//
//	pageviews (JSON)  ──parse──┬── errors ──────────────────────> pageviews-errors
//	                           └── views ──drop bots──key by user──> pageviews-by-user
//
// Run the demo (an embedded broker, sample input, the output printed):
//
//	go run ./examples/pageviews --demo
//
// Run it for real on the embedded broker and feed it with kcat:
//
//	go run ./examples/pageviews create-topics
//	go run ./examples/pageviews run &
//	echo '{"user":"ann","page":"/home","agent":"Firefox"}' | kcat -P -b 127.0.0.1:9092 -t pageviews
//	kcat -C -b 127.0.0.1:9092 -t pageviews-by-user -X isolation.level=read_committed -f '%k %s\n'
package main

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// View is one page view.
type View struct {
	User  string `json:"user"`
	Page  string `json:"page"`
	Agent string `json:"agent"`
}

// parsed is a view or the reason the input was not one.
type parsed struct {
	view View
	err  string
	raw  string
}

// Job builds the pageviews job.
func Job() *stream.Job {
	job := stream.NewJob("pageviews")
	in := stream.Input(job, "pageviews", serde.Bytes, serde.String)

	views := operators.MapValues(in, parse)
	routed := operators.Branch(views,
		func(_ []byte, p parsed) bool { return p.err != "" },
		func([]byte, parsed) bool { return true },
	)

	errs := operators.MapValues(routed[0], func(p parsed) string { return p.err + ": " + p.raw })
	stream.Output(errs, "pageviews-errors", serde.Bytes, serde.String)

	humans := operators.FilterNot(routed[1], func(_ []byte, p parsed) bool { return isBot(p.view.Agent) })
	byUser := operators.Map(humans, func(_ []byte, p parsed) (string, View) { return p.view.User, p.view })
	stream.Output(byUser, "pageviews-by-user", serde.String, serde.JSON[View]())
	return job
}

func parse(raw string) parsed {
	var v View
	if err := json.Unmarshal([]byte(raw), &v); err != nil {
		return parsed{err: "not JSON", raw: raw}
	}
	if v.User == "" || v.Page == "" {
		return parsed{err: "missing user or page", raw: raw}
	}
	return parsed{view: v}
}

func isBot(agent string) bool {
	a := strings.ToLower(agent)
	return strings.Contains(a, "bot") || strings.Contains(a, "crawler") || strings.Contains(a, "spider")
}

func main() {
	runner.Main(Job(), runner.WithDemo(runner.Demo{Seed: seed}))
}

// seed writes sample views: a few users, a bot, and two broken inputs.
func seed(emit func(topic string, rec stream.RawRecord)) {
	users := []string{"ann", "bob", "chen", "dara"}
	pages := []string{"/home", "/pricing", "/docs", "/blog"}
	for i := range 12 {
		v := View{User: users[i%len(users)], Page: pages[(i/2)%len(pages)], Agent: "Firefox"}
		if i%5 == 4 {
			v.Agent = "Googlebot/2.1"
		}
		b, _ := json.Marshal(v)
		emit("pageviews", stream.RawRecord{Value: b})
	}
	emit("pageviews", stream.RawRecord{Value: []byte("this is not json")})
	emit("pageviews", stream.RawRecord{Value: []byte(fmt.Sprintf(`{"page":%q}`, "/no-user"))})
}
