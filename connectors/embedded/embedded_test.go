package embedded_test

import (
	"strings"
	"testing"

	"github.com/samsa-go/samsa/connectors/embedded"
)

func TestAddressInUseIsClear(t *testing.T) {
	a, err := embedded.Start(embedded.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = embedded.Start(embedded.Config{Listen: a.Addr()})
	if err == nil || !strings.Contains(err.Error(), "address in use") || !strings.Contains(err.Error(), "--brokers "+a.Addr()) {
		t.Fatalf("got %v", err)
	}
}

func TestBadListenAddress(t *testing.T) {
	if _, err := embedded.Start(embedded.Config{Listen: "nonsense"}); err == nil || !strings.Contains(err.Error(), `listen address "nonsense"`) {
		t.Fatalf("got %v", err)
	}
}
