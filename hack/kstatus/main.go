// kstatus prints the kstatus verdict (Current, InProgress, Failed, ...) for one Kubernetes object read as
// JSON from stdin, using sigs.k8s.io/cli-utils/pkg/kstatus, the library Flux uses to decide health.
//
//	kubectl get litellmuser alice -o json | kstatus
package main

import (
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
	object := &unstructured.Unstructured{}
	if err := object.UnmarshalJSON(raw); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus: stdin is not a Kubernetes object:", err)
		os.Exit(1)
	}
	result, err := status.Compute(object)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
	fmt.Printf("%s\t%s\n", result.Status, result.Message)
}
