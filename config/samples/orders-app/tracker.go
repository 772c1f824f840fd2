package main

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

//go:embed tracker.html
var trackerPage []byte

// tracker serves the order tracker's page and its sessions.
type tracker struct {
	signer   jose.Signer
	edge     string // the channel's URL at the edge, as browsers reach it
	audience string
}

// A session lasts this long; the page asks for a fresh one when its stream ends for it.
const sessionTTL = 10 * time.Minute

func newTracker(keyFile, edgeURL, channel, audience string) (*tracker, error) {
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("EDGE_KEY_FILE: %w", err)
	}
	if edgeURL == "" {
		return nil, fmt.Errorf("EDGE_URL is not set: the URL browsers reach the channel's edge at, e.g. https://notify.example.com")
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("EDGE_KEY_FILE: %w", err)
	}
	return &tracker{signer: signer, edge: edgeURL + "/v1/channels/" + channel, audience: audience}, nil
}

func (tr *tracker) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(trackerPage)
	})
	mux.HandleFunc("GET /session", tr.session)
	return mux
}

// userID is what this sample accepts as a signed-in user: a real app takes the user from its
// own session, never from the request's query.
var userID = regexp.MustCompile(`^[0-9]{1,9}$`)

// session answers the page's user a token for the edge, which lets them follow their own key
// and the keys of their orders (user-<id>/order-<n>), and publish nothing.
func (tr *tracker) session(w http.ResponseWriter, r *http.Request) {
	user := r.URL.Query().Get("user")
	if !userID.MatchString(user) {
		http.Error(w, "user: a number, the signed-in user of this demo", http.StatusBadRequest)
		return
	}
	token, err := jwt.Signed(tr.signer).Claims(map[string]any{
		"aud": tr.audience,
		"sub": "user-" + user,
		"exp": time.Now().Add(sessionTTL).Unix(),
		"herald": map[string]any{
			"follow": []string{"user-" + user, "user-" + user + "/"},
		},
	}).Serialize()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": token,
		"edge":  tr.edge,
		"keys":  []string{"user-" + user + "/"},
	})
}
