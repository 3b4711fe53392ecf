// Command wordcount counts words: text lines in, a running count per word
// out. It is the classic stateful job: the lines are split into words,
// re-keyed by word through a repartition topic (so every occurrence of a
// word reaches the same task), and counted in a Pebble store whose
// changelog topic makes the counts survive the loss of the machine.
//
//	lines ──split──key by word──> wordcount-words-repartition ──count──> word-counts
//	                                                   (store "counts", changelog wordcount-counts-changelog)
//
// Run the demo (an embedded broker, sample input, the output printed):
//
//	go run ./examples/wordcount --demo
//
// Each output record is a word and its new count (8-byte big-endian, as
// Kafka's LongSerializer writes it); the last record of a word is its
// total. With kcat:
//
//	kcat -C -b 127.0.0.1:9092 -t word-counts -X isolation.level=read_committed -s value=Q -f '%k %s\n'
package main

import (
	"encoding/binary"
	"fmt"
	"strings"
	"unicode"

	"github.com/samsa-go/samsa/operators"
	"github.com/samsa-go/samsa/runner"
	"github.com/samsa-go/samsa/stream"
	"github.com/samsa-go/samsa/stream/serde"
)

// Job builds the word-count job.
func Job() *stream.Job {
	job := stream.NewJob("wordcount")
	lines := stream.Input(job, "lines", serde.Bytes, serde.String)
	words := operators.FlatMapValues(lines, split)
	byWord := operators.GroupBy(words, "words", func(_ []byte, w string) string { return w }, serde.String, serde.String)
	counts := operators.Count(byWord, "counts")
	stream.Output(counts.ToStream(), "word-counts", serde.String, serde.Int64)
	return job
}

// split returns the lower-cased words of a line.
func split(line string) []string {
	return strings.FieldsFunc(strings.ToLower(line), func(r rune) bool { return !unicode.IsLetter(r) && r != '\'' })
}

func main() {
	runner.Main(Job(), runner.WithDemo(runner.Demo{Seed: seed, Show: show}))
}

func seed(emit func(topic string, rec stream.RawRecord)) {
	for _, l := range []string{
		"The quick brown fox jumps over the lazy dog.",
		"The dog barks; the fox runs.",
		"A lazy afternoon: no fox, no dog, just the sun.",
	} {
		emit("lines", stream.RawRecord{Value: []byte(l)})
	}
}

func show(_ string, r stream.RawRecord) string {
	if len(r.Value) != 8 {
		return fmt.Sprintf("%q: %x", r.Key, r.Value)
	}
	return fmt.Sprintf("%-10s %d", r.Key, binary.BigEndian.Uint64(r.Value))
}
