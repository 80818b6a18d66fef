package demo

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// submitter plays the issuer's system: SMTP sessions with STARTTLS and AUTH.
type submitter struct {
	addr, password string
	mu             sync.Mutex
	accepted       map[string]time.Time // recipient -> when 250 came
	rcptCount      int
	msgCount       int
}

func newSubmitter(addr, password string) *submitter {
	return &submitter{addr: addr, password: password, accepted: map[string]time.Time{}}
}

// count is the number of messages accepted so far.
func (s *submitter) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msgCount
}

// recipients is the number of recipients accepted so far.
func (s *submitter) recipients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rcptCount
}

func (s *submitter) acceptedAt(rcpt string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.accepted[strings.ToLower(rcpt)]
	return t, ok
}

// run submits msgs over sessions SMTP sessions, pace apart at least.
func (s *submitter) run(ctx context.Context, msgs []message, sessions int, pace time.Duration) error {
	work := make(chan message)
	errs := make(chan error, sessions)
	var wg sync.WaitGroup
	for i := 0; i < sessions; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.session(work)
		}()
	}
	for i, m := range msgs {
		if i > 0 && pace > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(pace):
			}
		}
		if ctx.Err() != nil {
			break
		}
		work <- m
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (s *submitter) session(work <-chan message) error {
	c, err := smtp.DialStartTLS(s.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return fmt.Errorf("submitting: %w", err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "app", s.password)); err != nil {
		return fmt.Errorf("submitting: %w", err)
	}
	for m := range work {
		if err := c.SendMail(m.from, m.rcpts, strings.NewReader(string(m.data))); err != nil {
			return fmt.Errorf("submitting to %v: %w", m.rcpts, err)
		}
		now := time.Now()
		s.mu.Lock()
		for _, r := range m.rcpts {
			s.accepted[strings.ToLower(r)] = now
		}
		s.rcptCount += len(m.rcpts)
		s.msgCount++
		s.mu.Unlock()
	}
	return c.Quit()
}

// urgentSpread is how long the urgent mail behind the wave takes to
// submit: one token a second (faster when there are more than five), as
// customers ask for them, while the receivers still deal with the wave.
const urgentSpread = 5 * time.Second

// urgentPace is the time between two of n urgent mails.
func urgentPace(n int) time.Duration {
	if n < 2 {
		return 0
	}
	return min(time.Second, urgentSpread/time.Duration(n))
}

// submitWave submits the bulk mail over 8 sessions, then the urgent mail
// behind it over one, urgentPace apart; the channel gets the outcome.
func submitWave(ctx context.Context, sub *submitter, w wave) <-chan error {
	done := make(chan error, 1)
	go func() {
		if err := sub.run(ctx, w.bulk, 8, 0); err != nil {
			done <- err
			return
		}
		done <- sub.run(ctx, w.urgent, 1, urgentPace(len(w.urgent)))
	}()
	return done
}

// urgentPlan says how the n urgent mails go: "5 urgent token mails, one
// a second,".
func urgentPlan(n int) string {
	switch pace := urgentPace(n); {
	case n == 1:
		return "1 urgent token mail"
	case pace == time.Second:
		return fmt.Sprintf("%d urgent token mails, one a second,", n)
	case pace > 0:
		return fmt.Sprintf("%d urgent token mails, %s apart,", n, pace)
	}
	return fmt.Sprintf("%d urgent token mails", n)
}
