// Command forwarder is the app container of the end-to-end test's app pods: it forwards TCP
// connections from the pod's address (:8080) to the pod's Herald sidecar on loopback
// ($HERALD_URL), so the test, outside the pod, publishes and subscribes through the real,
// injected sidecar as the app would.
package main

import (
	"io"
	"log"
	"net"
	"net/url"
	"os"
)

func main() {
	u, err := url.Parse(os.Getenv("HERALD_URL"))
	if err != nil || u.Host == "" {
		log.Fatalf("HERALD_URL %q is not set or not a URL: is the pod labelled for injection?", os.Getenv("HERALD_URL"))
	}
	l, err := net.Listen("tcp", ":8080")
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("forwarding :8080 to %s", u.Host)
	for {
		in, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer in.Close()
			out, err := net.Dial("tcp", u.Host)
			if err != nil {
				log.Printf("dialing the sidecar: %v", err)
				return
			}
			defer out.Close()
			go func() {
				_, _ = io.Copy(out, in)
				if tcp, ok := out.(*net.TCPConn); ok {
					_ = tcp.CloseWrite()
				}
			}()
			_, _ = io.Copy(in, out)
		}()
	}
}
