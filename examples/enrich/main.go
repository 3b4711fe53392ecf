// Command enrich joins page views with what is known about their users
// and pages: each view, keyed by user, is enriched from the table of user
// profiles (a compacted topic partitioned like the views: a stream-table
// join) and from the catalog of pages (a small topic every instance reads
// in full: a global table, looked up by the view's page).
//
//	pageviews (key user) ──join user-profiles (table, key user)──join pages (global table, key path)──> pageviews-enriched
//
// Run the demo (an embedded broker, sample input, the output printed):
//
//	go run ./examples/enrich --demo
//
// The output, pageviews-enriched, has one record per view, keyed by user,
// in each partition in the order of the views' timestamps. Its value is
// the view with the user's name and plan as the profile table held them
// at the view's time, and the page's title and section from the catalog.
// A user or page with no entry is marked unknown rather than dropped (left
// joins). In the demo, ann upgrades to the "pro" plan half-way: her views
// before the upgrade say "free", those after it "pro", whatever order the
// broker delivers the two topics in, because a task merges its partitions
// of pageviews and user-profiles by timestamp. A view by "eve", who has
// no profile, and one of a page missing from the catalog show the unknown
// markers.
//
// Run it for real on the embedded broker and feed it with kcat (profiles
// and pages are compacted topics: key, then JSON value):
//
//	go run ./examples/enrich create-topics
//	go run ./examples/enrich run &
//	echo 'ann:{"name":"Ann Lee","plan":"free"}' | kcat -P -b 127.0.0.1:9092 -t user-profiles -K:
//	echo '/pricing:{"title":"Pricing","section":"sales"}' | kcat -P -b 127.0.0.1:9092 -t pages -K:
//	echo 'ann:{"page":"/pricing"}' | kcat -P -b 127.0.0.1:9092 -t pageviews -K:
//	kcat -C -b 127.0.0.1:9092 -t pageviews-enriched -X isolation.level=read_committed -f '%k %s\n'
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

// View is a page view, keyed by user.
type View struct {
	Page string `json:"page"`
}

// Profile is what the profile table holds for a user.
type Profile struct {
	Name string `json:"name"`
	Plan string `json:"plan"`
}

// Page is what the catalog holds for a page, keyed by path.
type Page struct {
	Title   string `json:"title"`
	Section string `json:"section"`
}

// Enriched is a view with its user's and page's details.
type Enriched struct {
	User    string `json:"user"`
	Name    string `json:"name"`
	Plan    string `json:"plan"`
	Page    string `json:"page"`
	Title   string `json:"title"`
	Section string `json:"section"`
}

// unknown marks what a lookup did not find.
const unknown = "(unknown)"

// Job builds the enrichment job.
func Job() *stream.Job {
	job := stream.NewJob("enrich")
	views := stream.Input(job, "pageviews", serde.String, serde.JSON[View]())
	profiles := stream.TableInput(job, "user-profiles", serde.String, serde.JSON[Profile]())
	pages := stream.GlobalTableInput(job, "pages", serde.String, serde.JSON[Page]())

	withUser := operators.LeftJoinTable(views, profiles, func(user string, v View, p Profile, found bool) Enriched {
		e := Enriched{User: user, Name: p.Name, Plan: p.Plan, Page: v.Page}
		if !found {
			e.Name, e.Plan = unknown, unknown
		}
		return e
	})
	enriched := operators.LeftJoinGlobal(withUser, pages,
		func(_ string, e Enriched) string { return e.Page },
		func(_ string, e Enriched, p Page, found bool) Enriched {
			e.Title, e.Section = p.Title, p.Section
			if !found {
				e.Title, e.Section = unknown, unknown
			}
			return e
		})
	stream.Output(enriched, "pageviews-enriched", serde.String, serde.JSON[Enriched]())
	return job
}

func main() {
	runner.Main(Job(), runner.WithDemo(runner.Demo{Seed: seed, Show: show}))
}

// show prints an enriched view: its time, user and page, then what the
// joins found about the page and the user.
func show(_ string, r stream.RawRecord) string {
	var e Enriched
	if err := json.Unmarshal(r.Value, &e); err != nil {
		return fmt.Sprintf("%q: %v", r.Value, err)
	}
	page, user := e.Title+", "+e.Section, e.Name+", "+e.Plan
	if e.Title == unknown {
		page = "(unknown page)"
	}
	if e.Name == unknown {
		user = "(unknown user)"
	}
	return fmt.Sprintf("%s  %-5s %-9s %-22s %s", r.Timestamp.UTC().Format("15:04"), e.User, e.Page, page, user)
}

// seed writes the catalog and the profiles, then a morning of views, with
// fixed timestamps so the demo prints the same thing every time.
func seed(emit func(topic string, rec stream.RawRecord)) {
	at := func(minute int) time.Time {
		return time.Date(2026, 1, 5, 9, minute, 0, 0, time.UTC)
	}
	put := func(topic, key string, v any, ts time.Time) {
		b, _ := json.Marshal(v)
		emit(topic, stream.RawRecord{Key: []byte(key), Value: b, Timestamp: ts})
	}
	for path, p := range map[string]Page{
		"/":        {"Home", "main"},
		"/pricing": {"Pricing", "sales"},
		"/docs":    {"Documentation", "docs"},
	} {
		put("pages", path, p, at(0))
	}
	put("user-profiles", "ann", Profile{"Ann Lee", "free"}, at(0))
	put("user-profiles", "bob", Profile{"Bob Ortiz", "pro"}, at(0))
	put("user-profiles", "chen", Profile{"Chen Wu", "team"}, at(0))
	// Ann upgrades at 09:30.
	put("user-profiles", "ann", Profile{"Ann Lee", "pro"}, at(30))

	views := []struct {
		user, page string
		minute     int
	}{
		{"ann", "/", 5}, {"bob", "/docs", 8}, {"ann", "/pricing", 12}, {"chen", "/", 15},
		{"eve", "/pricing", 20}, {"bob", "/blog", 25}, {"ann", "/docs", 35}, {"chen", "/pricing", 40},
		{"ann", "/", 45},
	}
	for _, v := range views {
		put("pageviews", v.user, View{Page: v.page}, at(v.minute))
	}
}
