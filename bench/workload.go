// Package bench is samsa's performance harness: the workload shared by the
// pipeline command (bench/cmd/pipeline), which compares a samsa job with a
// hand-written franz-go loop on a real broker, and by this package's Go
// benchmarks, which push records through the operators in-process to show
// their own cost per record. README.md has the figures and how to get
// them.
package bench

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"unicode"
)

// Upper is the map both sides of every comparison apply to each record's
// value: realistic work (a read of every byte and a new slice for the
// result) that is cheap next to moving the record through Kafka.
func Upper(value []byte) []byte { return bytes.ToUpper(value) }

// Keys returns n distinct keys, "key-0" to "key-<n-1>".
func Keys(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%d", i)
	}
	return keys
}

// Values returns n values of size lower-case ASCII letters each, so that
// [Upper] has every byte to change. They are pseudo-random from a fixed
// seed: the same on every run.
func Values(n, size int) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	values := make([][]byte, n)
	for i := range values {
		v := make([]byte, size)
		for j := range v {
			v[j] = 'a' + byte(rng.IntN(26))
		}
		values[i] = v
	}
	return values
}

// Lines returns n text lines of wordsPerLine words each, drawn from a
// fixed vocabulary of vocabulary words of 3 to 10 lower-case letters:
// the input of the word-count workload. They are pseudo-random from a
// fixed seed: the same on every run.
func Lines(n, wordsPerLine, vocabulary int) [][]byte {
	rng := rand.New(rand.NewPCG(3, 4))
	vocab := make([]string, vocabulary)
	for i := range vocab {
		w := make([]byte, 3+rng.IntN(8))
		for j := range w {
			w[j] = 'a' + byte(rng.IntN(26))
		}
		vocab[i] = string(w)
	}
	lines := make([][]byte, n)
	for i := range lines {
		words := make([]string, wordsPerLine)
		for j := range words {
			words[j] = vocab[rng.IntN(len(vocab))]
		}
		lines[i] = []byte(strings.Join(words, " "))
	}
	return lines
}

// Words returns the lower-cased words of a line, as the word-count
// example (examples/wordcount) splits it.
func Words(line string) []string {
	return strings.FieldsFunc(strings.ToLower(line), func(r rune) bool { return !unicode.IsLetter(r) && r != '\'' })
}
