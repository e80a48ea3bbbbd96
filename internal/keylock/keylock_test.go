package keylock

import (
	"sync"
	"testing"
)

func TestLockSerialisesAKeyAndForgetsIt(t *testing.T) {
	var s Set
	var wg sync.WaitGroup
	// The map is only read concurrently; each counter is guarded by the
	// lock of its key alone.
	counts := map[string]*int{"a": new(int), "b": new(int)}
	for i := range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := []string{"a", "b"}[i%2]
			unlock := s.Lock(key)
			*counts[key]++ // a data race here would fail under -race
			unlock()
		}()
	}
	wg.Wait()
	if *counts["a"] != 100 || *counts["b"] != 100 {
		t.Errorf("counts = %d, %d", *counts["a"], *counts["b"])
	}
	if len(s.m) != 0 {
		t.Errorf("%d keys left after every unlock", len(s.m))
	}
}
