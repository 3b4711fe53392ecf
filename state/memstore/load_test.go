package memstore_test

import (
	"testing"

	"github.com/samsa-go/samsa/state"
	"github.com/samsa-go/samsa/state/memstore"
	"github.com/samsa-go/samsa/state/storetest"
)

func TestLoadConformance(t *testing.T) {
	storetest.TestLoad(t, func(*testing.T) state.Backend { return memstore.New() })
}
