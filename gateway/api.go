package gateway

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/certgate/certgate/store"
)

// MessageHandler serves GET /api/v1/messages/{id}: a message's state per
// recipient and its audit trail. Authentication is the router's business.
func MessageHandler(st store.Store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		v, err := st.Message(r.Context(), id)
		if errors.Is(err, store.ErrNotFound) {
			WriteError(w, http.StatusNotFound, "not_found", "no message with id "+id)
			return
		}
		if err != nil {
			log.Error("api: reading message", "id", id, "err", err)
			WriteError(w, http.StatusInternalServerError, "internal", "the message could not be read")
			return
		}
		WriteJSON(w, http.StatusOK, messageJSON(v))
	})
}

type apiMessage struct {
	ID         string         `json:"id"`
	Tenant     string         `json:"tenant"`
	MailFrom   string         `json:"mail_from"`
	HeaderFrom string         `json:"header_from"`
	MessageID  string         `json:"message_id"`
	Subject    string         `json:"subject"`
	Class      string         `json:"class"`
	Size       int64          `json:"size"`
	ClientAddr string         `json:"client_addr"`
	AuthUser   string         `json:"auth_user,omitempty"`
	ReceivedAt time.Time      `json:"received_at"`
	Recipients []apiRecipient `json:"recipients"`
	Events     []apiEvent     `json:"events"`
}

type apiRecipient struct {
	Address     string     `json:"address"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	Provider    string     `json:"provider,omitempty"`
	LastCode    int        `json:"last_code,omitempty"`
	LastReply   string     `json:"last_reply,omitempty"`
	TrackingID  string     `json:"tracking_id"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

type apiEvent struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Actor     string    `json:"actor"`
	Recipient string    `json:"recipient,omitempty"`
	Detail    string    `json:"detail"`
}

func messageJSON(v *store.MessageView) apiMessage {
	m := v.Message
	out := apiMessage{ID: m.ID, Tenant: m.Tenant, MailFrom: m.MailFrom, HeaderFrom: m.HeaderFrom, MessageID: m.MessageID,
		Subject: m.Subject, Class: m.Class, Size: m.Size, ClientAddr: m.ClientAddr, AuthUser: m.AuthUser,
		ReceivedAt: m.ReceivedAt.UTC(), Recipients: []apiRecipient{}, Events: []apiEvent{}}
	byID := map[int64]string{}
	for _, r := range v.Recipients {
		byID[r.ID] = r.Address
		ar := apiRecipient{Address: r.Address, State: string(r.State), Attempts: r.Attempts, Provider: r.Provider,
			LastCode: r.LastCode, LastReply: r.LastReply, TrackingID: r.TrackingID, UpdatedAt: r.UpdatedAt.UTC()}
		if r.State == store.StateQueued {
			t := r.NextAttempt.UTC()
			ar.NextAttempt = &t
		}
		out.Recipients = append(out.Recipients, ar)
	}
	for _, e := range v.Events {
		out.Events = append(out.Events, apiEvent{Time: e.Time.UTC(), Kind: e.Kind, Actor: e.Actor,
			Recipient: byID[e.RecipientID], Detail: e.Detail})
	}
	return out
}

// WriteJSON writes v as the JSON body of a response.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError writes an API error: a machine-readable code and a reason a
// person can act on.
func WriteError(w http.ResponseWriter, status int, code, reason string) {
	WriteJSON(w, status, map[string]string{"error": code, "reason": reason})
}
