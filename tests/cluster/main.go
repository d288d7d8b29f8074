// Command cluster is every component of the test cluster in one binary, so they share one
// compile and one release: `cluster <component> [flags]`, where component is etcd,
// kube-apiserver, kube-controller-manager, kube-proxy, kubectl or coredns. It only hands the
// arguments to each component's own entry point; the project's code is not here. One more,
// apiload (apiload.go), is the benchmark's long-lived API client.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"

	// CoreDNS plugins: only those the fixture's Corefiles use.
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"
)

// corednsDirectives is CoreDNS's plugin order, cut to the plugins linked above.
var corednsDirectives = []string{
	"reload", "health", "ready", "errors", "log", "loadbalance", "cache", "template",
	"file", "kubernetes", "forward",
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cluster etcd|kube-apiserver|kube-controller-manager|kube-proxy|kubectl|coredns|apiload [flags]")
		os.Exit(2)
	}
	component, args := os.Args[1], os.Args[2:]
	// Each component parses os.Args itself; make it look like its own binary.
	os.Args = append([]string{component}, args...)
	switch filepath.Base(component) {
	case "etcd":
		etcdmain.Main(os.Args)
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-proxy":
		os.Exit(cli.Run(proxy.NewProxyCommand()))
	case "kubectl":
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			kubectlutil.CheckErr(err)
		}
	case "apiload":
		os.Exit(apiload(args))
	case "coredns":
		dnsserver.Directives = corednsDirectives
		coremain.Run()
	default:
		fmt.Fprintf(os.Stderr, "cluster: unknown component %q\n", component)
		os.Exit(2)
	}
}
