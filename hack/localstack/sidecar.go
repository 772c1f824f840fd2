package localstack

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// TokenAudience is the audience shard relays accept (herald relay --token-audience).
const TokenAudience = "herald"

// relayFlags reports which optional flags this build of `herald relay` has.
func relayFlags(herald string) (kubeconfig, sidecar bool) {
	out, _ := exec.Command(herald, "relay", "--help").CombinedOutput()
	return bytes.Contains(out, []byte("--kubeconfig")), bytes.Contains(out, []byte("--role=sidecar"))
}

// HasSidecarRole reports whether the stack's herald binary has `relay --role=sidecar`.
func (s *Stack) HasSidecarRole() bool {
	_, sidecar := relayFlags(s.Herald)
	return sidecar
}

// ServiceAccountToken returns a token of namespace/name for audience (empty: the API server's
// own) from the TokenRequest API: what a kubelet projects into a pod. With create, a missing
// service account is created first (there is no service account controller here).
func (s *Stack) ServiceAccountToken(ctx context.Context, namespace, name, audience string, ttl time.Duration, create bool) (string, error) {
	cs, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return "", err
	}
	if create {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
		if _, err := cs.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("creating service account %s/%s: %w", namespace, name, err)
		}
	}
	secs := int64(ttl.Seconds())
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs}}
	if audience != "" {
		req.Spec.Audiences = []string{audience}
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token of %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// SidecarOptions describe the sidecar of one (imaginary) app pod.
type SidecarOptions struct {
	Name           string // names its log and token files; required
	Namespace      string // the pod's namespace; required
	Channels       string // --channels; required
	Listen         string // 127.0.0.1:port; required
	ServiceAccount string // whose token the sidecar presents. Defaults to "default".
}

// StartSidecar runs `herald relay --role=sidecar` as the injected sidecar of a pod would run,
// with the runner's endpoints file for DNS and a token of the pod's service account (audience
// herald, refreshed at half its hour-long life as a kubelet does), and waits until it is ready.
func (s *Stack) StartSidecar(ctx context.Context, o SidecarOptions) (*Process, error) {
	if o.ServiceAccount == "" {
		o.ServiceAccount = "default"
	}
	tokenFile := filepath.Join(s.Dir, "tokens", o.Name)
	const ttl = time.Hour
	refresh := func() error {
		tok, err := s.ServiceAccountToken(ctx, o.Namespace, o.ServiceAccount, TokenAudience, ttl, true)
		if err != nil {
			return err
		}
		return writeFileIfChanged(tokenFile, []byte(tok), 0o600)
	}
	if err := refresh(); err != nil {
		return nil, err
	}
	args := []string{"relay", "--role=sidecar", "--listen=" + o.Listen, "--channels=" + o.Channels,
		"--namespace=" + o.Namespace, "--endpoints-file=" + s.Runner.EndpointsFile(), "--token-file=" + tokenFile}
	logPath := filepath.Join(s.Dir, o.Name+".log")
	p, err := StartProcess(s.Herald, args, nil, logPath)
	if err != nil {
		return nil, fmt.Errorf("starting sidecar %s: %w", o.Name, err)
	}
	go func() {
		for {
			select {
			case <-p.done:
				return
			case <-time.After(ttl / 2):
				_ = refresh()
			}
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + o.Listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("sidecar %s exited (see %s)", o.Name, logPath)
		default:
		}
		if time.Now().After(deadline) {
			p.Stop(5 * time.Second)
			return nil, fmt.Errorf("sidecar %s is not ready after 60s (see %s)", o.Name, logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Command is the process's command line, for people.
func (p *Process) Command() string { return strings.Join(p.cmd.Args, " ") }

// serviceAccountTTL is the life of the API tokens the runner gives relays; they are renewed at
// half of it, as a kubelet renews projected tokens.
const serviceAccountTTL = time.Hour

// serviceAccountKubeconfig writes (once) a kubeconfig that reaches the API server as
// namespace/name with a token file, and renews the token when it is half through its life
// (client-go re-reads a kubeconfig's tokenFile). The service account must exist: a pod whose
// service account is missing does not start in a cluster either.
func (s *Stack) serviceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	s.saMu.Lock()
	defer s.saMu.Unlock()
	dir := filepath.Join(s.Dir, "serviceaccounts", namespace, name)
	tokenPath, kcPath := filepath.Join(dir, "token"), filepath.Join(dir, "kubeconfig")
	key := namespace + "/" + name
	if at, ok := s.saTokens[key]; ok && time.Since(at) < serviceAccountTTL/2 {
		return kcPath, nil // (in memory: files a previous run left name another API server)
	}
	tok, err := s.ServiceAccountToken(ctx, namespace, name, "", serviceAccountTTL, false)
	if err != nil {
		return "", err
	}
	if err := writeFileIfChanged(tokenPath, []byte(tok), 0o600); err != nil {
		return "", err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: s.Config.Host, CertificateAuthorityData: s.Config.CAData}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{TokenFile: tokenPath}
	cfg.Contexts["default"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: name, Namespace: namespace}
	cfg.CurrentContext = "default"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return "", err
	}
	if err := writeFileIfChanged(kcPath, b, 0o600); err != nil {
		return "", err
	}
	if s.saTokens == nil {
		s.saTokens = map[string]time.Time{}
	}
	s.saTokens[key] = time.Now()
	return kcPath, nil
}

// installRelayRole creates the ClusterRole the manager binds each channel's relay service
// account to (config/rbac/relay_role.yaml, named as config/default's namePrefix and the chart
// name it: herald-relay), so that relays' TokenReviews are authorized as in a cluster.
func (s *Stack) installRelayRole(ctx context.Context) error {
	b, err := os.ReadFile(filepath.Join(s.opt.Root, "config", "rbac", "relay_role.yaml"))
	if err != nil {
		return err
	}
	var role rbacv1.ClusterRole
	if err := yaml.Unmarshal(b, &role); err != nil {
		return fmt.Errorf("config/rbac/relay_role.yaml: %w", err)
	}
	role.Name = "herald-" + role.Name
	if err := s.Client.Create(ctx, &role); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating ClusterRole %s: %w", role.Name, err)
	}
	return nil
}
