// Package injection is the mutating admission webhook that gives opted-in pods the Herald relay as
// a native sidecar. Only pods labelled notifications.herald.dev/inject=true reach it (the webhook
// configuration's objectSelector), so failurePolicy Fail is safe: every other pod is created
// without Herald in the path.
package injection
