// Stub-resolver client: Go's pure-Go resolver (net.Resolver{PreferGo: true}) with every query
// dialled to one server, then a TCP connection to the first address.
//
// Usage: go_client NAME PORT ROUNDS --server ADDR --dns-port P [--family any|4|6]
//
// --family any (default) is what net.Dial does for a host name: A and AAAA in parallel, the
// results sorted by RFC 6724. Go reads /etc/resolv.conf for its options (ndots, search,
// timeout, attempts, single-request) and /etc/hosts + /etc/nsswitch.conf for the lookup order;
// only the server address is replaced. Truncated UDP answers are retried over TCP by Go itself.
// Prints one JSON line (README.md).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func usage(msg string) {
	fmt.Fprintf(os.Stderr, "go_client: %s\nusage: go_client NAME PORT ROUNDS --server ADDR --dns-port P [--family any|4|6]\n", msg)
	os.Exit(2)
}

type summary struct {
	Rounds    int            `json:"rounds"`
	Replies   map[string]int `json:"replies"`
	Errors    map[string]int `json:"errors"`
	Addresses []string       `json:"addresses"`
}

func errText(prefix string, err error) string {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		// Without the resolv.conf server Go names in Error(), and without socket addresses
		// ("read udp [::1]:34820->[::1]:53: read: connection refused" -> "connection refused").
		msg := dnsErr.Err
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		if dnsErr.IsTimeout {
			msg = "timed out"
		}
		return prefix + msg
	}
	var sysErr *os.SyscallError
	if errors.As(err, &sysErr) {
		return prefix + sysErr.Err.Error()
	}
	var netErr net.Error
	if errors.As(err, &netErr) && netErr.Timeout() {
		return prefix + "timed out"
	}
	return prefix + err.Error()
}

func greet(ip net.IP, port int) (string, string) {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)), 2*time.Second)
	if err != nil {
		return "", errText("connect: ", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 0, 64)
	for len(buf) < 64 {
		n, err := conn.Read(buf[len(buf):64])
		buf = buf[:len(buf)+n]
		if err != nil {
			if len(buf) == 0 && !errors.Is(err, io.EOF) {
				return "", errText("read: ", err)
			}
			break
		}
	}
	return strings.TrimSpace(string(buf)), ""
}

func main() {
	var pos []string
	opts := map[string]string{"family": "any"}
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		switch a := args[i]; a {
		case "--server", "--dns-port", "--family":
			if i+1 >= len(args) {
				usage(a + " needs a value")
			}
			opts[a[2:]] = args[i+1]
			i++
		default:
			if strings.HasPrefix(a, "--") {
				usage("unknown option " + a)
			}
			pos = append(pos, a)
		}
	}
	if len(pos) != 3 {
		usage("need NAME PORT ROUNDS")
	}
	num := func(s, what string) int {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			usage("bad " + what + ": " + s)
		}
		return v
	}
	name, port, rounds := pos[0], num(pos[1], "PORT"), num(pos[2], "ROUNDS")
	if opts["server"] == "" || opts["dns-port"] == "" {
		usage("--server and --dns-port are required")
	}
	server := net.JoinHostPort(opts["server"], strconv.Itoa(num(opts["dns-port"], "--dns-port")))
	network := map[string]string{"any": "ip", "4": "ip4", "6": "ip6"}[opts["family"]]
	if network == "" {
		usage("--family is any, 4 or 6")
	}

	out := summary{Rounds: rounds, Replies: map[string]int{}, Errors: map[string]int{}, Addresses: []string{}}
	seen := map[string]bool{}
	for i := 0; i < rounds; i++ {
		// A new Resolver each round (the pure-Go resolver keeps no answer cache anyway).
		resolver := &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, server) // "udp", or "tcp" after TC=1
			},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ips, err := resolver.LookupIP(ctx, network, name)
		cancel()
		if err != nil {
			out.Errors[errText("resolve: ", err)]++
			continue
		}
		if len(ips) == 0 {
			out.Errors["resolve: no address"]++
			continue
		}
		first := ips[0]
		if !seen[first.String()] {
			seen[first.String()] = true
			out.Addresses = append(out.Addresses, first.String())
		}
		reply, errStr := greet(first, port)
		if errStr != "" {
			out.Errors[errStr]++
		} else {
			out.Replies[reply]++
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(out)
}
