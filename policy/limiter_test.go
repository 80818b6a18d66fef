package policy_test

import (
	"testing"

	"github.com/certgate/certgate/policy"
	"github.com/certgate/certgate/policy/limitertest"
)

// LocalLimiter keeps the contract every Limiter keeps.
func TestLocalLimiter(t *testing.T) {
	limitertest.Run(t, func(*testing.T) policy.Limiter { return policy.NewLocalLimiter() })
}
