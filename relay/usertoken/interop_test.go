package usertoken_test

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/relay/usertoken"
)

// A token minted by another implementation (Debian's PyJWT, as docs/edge.md shows an app's
// backend doing it) verifies, and grants what it says.
func TestATokenMintedByPyJWTVerifies(t *testing.T) {
	script := `import jwt, sys
print(jwt.encode({"aud": "shop/orders", "sub": "user-42", "exp": int(sys.argv[2]),
                  "herald": {"follow": ["user-42", "team-7/"]}}, sys.argv[1], algorithm="HS256"))`
	out, err := exec.Command("/usr/bin/python3", "-c", script, string(hmacKey), strconv.FormatInt(now.Add(time.Minute).Unix(), 10)).CombinedOutput()
	if err != nil {
		t.Fatalf("minting with PyJWT (hack/test-deps.sh installs python3-jwt): %v\n%s", err, out)
	}
	v := newVerifier(t, usertoken.Options{HMACKeyFile: writeFile(t, "hmac", hmacKey)})
	g, err := v.Verify(context.Background(), strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if g.Subject != "user-42" || !g.MayFollow("team-7/x") || g.MayFollow("user-43") || g.MayPublish("user-42") {
		t.Fatalf("PyJWT's token grants %+v", g)
	}
}
