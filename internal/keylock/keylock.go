// Package keylock provides mutexes by key, for adapters that must serialise
// work per conversation or per dialog (creating one DM room for a pair,
// updating one user's bindings) without one lock for everything.
package keylock

import "sync"

// Set is a set of mutexes by key, created on demand and dropped when no one
// holds or waits for them. The zero Set is ready to use.
type Set struct {
	mu sync.Mutex
	m  map[string]*entry
}

type entry struct {
	sync.Mutex
	refs int
}

// Lock locks key, waiting while someone else holds it, and returns the
// function that unlocks it.
func (s *Set) Lock(key string) (unlock func()) {
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[string]*entry)
	}
	e := s.m[key]
	if e == nil {
		e = &entry{}
		s.m[key] = e
	}
	e.refs++
	s.mu.Unlock()
	e.Lock()
	return func() {
		e.Unlock()
		s.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(s.m, key)
		}
		s.mu.Unlock()
	}
}
