package main

// apiload is the benchmark's API client: `cluster apiload --kubeconfig=K [--workers=N]` reads
// one request per line on stdin, {"id":1,"verb":"create"|"apply"|"apply-status"|"delete",
// "object":{...}} (the applies are server-side, forced, as field manager egress-bench), sends each
// to the API server through client-go's dynamic client (no client-side rate limit, so the
// server's own flow control is the only one), and answers one line per request, in the order
// they finish: {"id":1,"error":"","uid":"..."} (the object's UID after a create or apply). One long-lived client instead of a kubectl per object:
// 20,000 objects, or 20 pods a second, would otherwise be measured as kubectl's start-up.

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

type loadRequest struct {
	ID     uint64                 `json:"id"`
	Verb   string                 `json:"verb"`
	Object map[string]interface{} `json:"object"`
}

type loadResponse struct {
	ID    uint64 `json:"id"`
	Error string `json:"error"`
	UID   string `json:"uid"`
}

func apiload(args []string) int {
	flags := flag.NewFlagSet("apiload", flag.ContinueOnError)
	kubeconfig := flags.String("kubeconfig", "", "the client's kubeconfig")
	workers := flags.Int("workers", 8, "requests in flight")
	if err := flags.Parse(args); err != nil {
		return 2
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apiload:", err)
		return 1
	}
	config.QPS = -1
	client, err := dynamic.NewForConfig(config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apiload:", err)
		return 1
	}
	disco, err := discovery.NewDiscoveryClientForConfig(config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apiload:", err)
		return 1
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))

	requests := make(chan loadRequest)
	out := json.NewEncoder(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range *workers {
		wg.Go(func() {
			for req := range requests {
				response := loadResponse{ID: req.ID}
				uid, err := send(client, mapper, req)
				if err != nil {
					response.Error = err.Error()
				}
				response.UID = uid
				mu.Lock()
				_ = out.Encode(response)
				mu.Unlock()
			}
		})
	}
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		var req loadRequest
		if err := json.Unmarshal(scanner.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, "apiload: bad request:", err)
			return 2
		}
		requests <- req
	}
	close(requests)
	wg.Wait()
	return 0
}

func send(client dynamic.Interface, mapper *restmapper.DeferredDiscoveryRESTMapper, req loadRequest) (string, error) {
	object := &unstructured.Unstructured{Object: req.Object}
	gvk := object.GroupVersionKind()
	mapping, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		mapper.Reset()
		return "", err
	}
	resource := client.Resource(mapping.Resource)
	var api dynamic.ResourceInterface = resource
	if namespace := object.GetNamespace(); namespace != "" {
		api = resource.Namespace(namespace)
	}
	ctx := context.Background()
	var result *unstructured.Unstructured
	switch req.Verb {
	case "create":
		result, err = api.Create(ctx, object, metav1.CreateOptions{})
	case "apply":
		options := metav1.ApplyOptions{FieldManager: "egress-bench", Force: true}
		result, err = api.Apply(ctx, object.GetName(), object, options)
	case "apply-status":
		options := metav1.ApplyOptions{FieldManager: "egress-bench", Force: true}
		result, err = api.ApplyStatus(ctx, object.GetName(), object, options)
	case "delete":
		grace := int64(0)
		err = api.Delete(ctx, object.GetName(), metav1.DeleteOptions{GracePeriodSeconds: &grace})
	default:
		err = fmt.Errorf("unknown verb %q", req.Verb)
	}
	if err != nil || result == nil {
		return "", err
	}
	return string(result.GetUID()), nil
}
