package postgres

import (
	"context"
	"testing"

	"github.com/certgate/certgate/internal/testpg"
	"github.com/certgate/certgate/store"
	"github.com/certgate/certgate/store/storetest"
)

// openTest opens a store on a new database of srv, closed by the suite.
func openTest(t *testing.T, srv *testpg.Server) *Store {
	t.Helper()
	s, err := Open(context.Background(), srv.NewDB(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	srv := testpg.Start(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openTest(t, srv) })
}
