// Package usertoken verifies the tokens an app's backend mints for its end users, so that an
// edge relay can let a browser or a phone follow (and, where granted, publish to) the keys the
// app allows, without calling the app or the API server per connection.
//
// A token is a JWT (JWS compact form) signed with HS256 by a key from a Secret, or with RS256,
// ES256 or EdDSA by a key from a JWKS (a Secret, optionally a URL). Its claims:
//
//	{
//	  "aud": "<namespace>/<channel>",          // the channel it is for (or the edge's configured audience)
//	  "sub": "user-42",                        // who holds it (counted for per-user limits)
//	  "exp": 1796600000, "nbf": 1796599000,    // exp is required; nbf and iat are checked when present
//	  "herald": {
//	    "follow":  ["user-42", "team-7/"],     // keys and key prefixes (ending in "/") it may follow
//	    "publish": ["user-42"]                 // keys it may publish to; absent: none
//	  }
//	}
//
// Every refusal is an *Error with the HTTP status to answer (401: the token is missing, does
// not verify, is expired or is for another audience; 403: it verifies but does not grant what
// was asked) and a detail that names what was wrong. A token's text is never logged or echoed.
package usertoken
