package auth

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// Checker decides whether an HTTP call to a shard relay may go through. Its Authorize method
// has the shape of httpapi.Config.Authorize.
type Checker struct {
	Review    func(ctx context.Context, peer, token string) (Identity, error) // who the token from peer belongs to (TokenReviewer.ReviewFrom)
	Allows    func(namespace string) bool                                     // may pods of this namespace use the channel (shardmap.Map.Allows)
	Namespace string                                                          // the channel's namespace, named in 403 answers
	Channel   string                                                          // the channel's name, likewise
}

// Authorize returns the caller ("<namespace>/<service account>") and status 0 for a call from a
// service account of a permitted namespace; otherwise 401 (no bearer token, or one the API
// server does not accept for the audience), 403 (a permitted caller is not: another namespace,
// or not a service account) or 503 (the API server could not be asked), with a reason the
// caller can act on.
func (c *Checker) Authorize(r *http.Request) (string, int, string) {
	token, ok := BearerToken(r)
	if !ok {
		return "", http.StatusUnauthorized, "no bearer token: call through the Herald sidecar, which sends its pod's service account token for this channel (audience herald.dev/<namespace>/<channel>) as Authorization: Bearer <token>"
	}
	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		peer = r.RemoteAddr
	}
	id, err := c.Review(r.Context(), peer, token)
	switch {
	case errors.Is(err, ErrInvalidToken):
		return "", http.StatusUnauthorized, "the bearer token is not valid for this relay (" + err.Error() + "); the sidecar re-reads its projected token, so retry"
	case err != nil:
		return "", http.StatusServiceUnavailable, "cannot verify the bearer token now (" + err.Error() + "); retry"
	case id.Namespace == "":
		return "", http.StatusForbidden, strconv.Quote(id.Username) + " is not a service account; only sidecars of permitted namespaces may call"
	case !c.Allows(id.Namespace):
		return "", http.StatusForbidden, "namespace " + strconv.Quote(id.Namespace) + " may not use channel " + c.Namespace + "/" + c.Channel +
			"; its owners can add the namespace to the channel's spec.access"
	}
	return id.Namespace + "/" + id.ServiceAccount, 0, ""
}

// BearerToken returns the token of an "Authorization: Bearer <token>" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}
