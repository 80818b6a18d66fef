package gateway

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// loginServer implements the LOGIN mechanism (draft-murchison-sasl-login),
// which go-sasl only has a client for and which many issuer systems still
// use. It asks for the username, then the password.
type loginServer struct {
	check    func(username, password string) error
	username string
	step     int
}

func newLoginServer(check func(username, password string) error) sasl.Server {
	return &loginServer{check: check}
}

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step = 1
		if response == nil { // no initial response: ask for it
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		s.username = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		return nil, true, s.check(s.username, string(response))
	}
	return nil, false, errors.New("sasl login: unexpected step")
}
