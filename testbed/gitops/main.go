// Command gitops-verdicts asks three GitOps consumers what they think of Kubernetes objects, so
// the Rust integration tests can check the operator's status against the tools people deploy it
// with. It deliberately calls each tool's OWN library code rather than re-implementing its rules:
//
//   - kstatus: sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute.
//   - Argo CD: gitops-engine's health.GetResourceHealth with argo-cd's util/lua
//     ResourceHealthOverrides, i.e. the call the application controller makes
//     (controller/health.go) once a `resource.customizations.health.<group>_<Kind>` script is
//     configured in argocd-cm. The script runs in argo-cd's own gopher-lua VM (UseOpenLibs=false,
//     as for any argocd-cm script without `resource.customizations.useOpenLibs.<group>_<Kind>`).
//   - Flux: the status reader kustomize-controller builds for a Kustomization (see
//     getClientAndPoller in kustomize-controller): fluxcd/pkg/runtime/cel.NewStatusReader over
//     `spec.healthCheckExprs`, after fluxcd/pkg/runtime/statusreaders' Job reader and before
//     fluxcd/cli-utils' default readers (Flux's kstatus fork), chosen by GroupKind as Flux's
//     poller does.
//
// Build (from this directory; versions are pinned in go.mod/go.sum):
//
//	CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o <dir>/gitops-verdicts .
//
// Usage:
//
//	gitops-verdicts --argocd-script integrations/argocd/health.lua \
//	    --flux-kustomization integrations/flux/kustomization-health.yaml < objects.jsonl
//
// stdin holds one Kubernetes object per line as JSON (blank lines are skipped); stdout gets one
// JSON line per object, in order:
//
//	{"kstatus":{"status":"InProgress","message":"..."},
//	 "argocd":{"status":"Progressing","message":"..."},
//	 "flux":{"status":"InProgress","message":"...","reader":"healthCheckExprs"}}
//
// A tool that fails on one object gets {"error": "..."} in its entry (plus the status the tool
// itself reports alongside the error, if any: Argo CD and Flux both turn errors into Unknown).
// The exit code is non-zero only for bad flags or unreadable/invalid configuration files.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/argoproj/argo-cd/gitops-engine/pkg/health"
	appv1 "github.com/argoproj/argo-cd/v3/pkg/apis/application/v1alpha1"
	argolua "github.com/argoproj/argo-cd/v3/util/lua"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/engine"
	fluxreaders "github.com/fluxcd/cli-utils/pkg/kstatus/polling/statusreaders"
	kustomizev1 "github.com/fluxcd/kustomize-controller/api/v1"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	fluxjob "github.com/fluxcd/pkg/runtime/statusreaders"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// verdict is one tool's answer for one object.
type verdict struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	// Reader says which Flux status reader answered: "healthCheckExprs" (CEL) or "default"
	// (Flux's kstatus fork, used when no healthCheckExprs entry matches the GroupKind).
	Reader string `json:"reader,omitempty"`
	Error  string `json:"error,omitempty"`
}

type line struct {
	KStatus verdict `json:"kstatus"`
	ArgoCD  verdict `json:"argocd"`
	Flux    verdict `json:"flux"`
}

func main() {
	script := flag.String("argocd-script", "", "Argo CD health.lua script (required)")
	resource := flag.String("argocd-resource", "compshare.ucloud.cn/CompShareInstance",
		"Argo CD resource override key the script is installed under (<group>/<Kind>, as argocd-cm's\n"+
			"resource.customizations.health.<group>_<Kind>); objects of other kinds get Argo CD's built-in health")
	openLibs := flag.Bool("argocd-use-open-libs", false,
		"as argocd-cm resource.customizations.useOpenLibs.<group>_<Kind> (Argo CD's default is false)")
	kustomization := flag.String("flux-kustomization", "", "Flux Kustomization YAML with spec.healthCheckExprs (required)")
	flag.Parse()
	if *script == "" || *kustomization == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}

	lua, err := os.ReadFile(*script)
	if err != nil {
		fatal(err)
	}
	overrides := argolua.ResourceHealthOverrides{
		*resource: appv1.ResourceOverride{HealthLua: string(lua), UseOpenLibs: *openLibs},
	}

	flux, err := fluxStatusReader(*kustomization)
	if err != nil {
		fatal(err)
	}

	in := bufio.NewReader(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for {
		raw, readErr := in.ReadBytes('\n')
		if len(bytes.TrimSpace(raw)) > 0 {
			writeLine(out, evaluate(raw, overrides, flux))
		}
		if readErr == io.EOF {
			return
		}
		if readErr != nil {
			fatal(readErr)
		}
	}
}

func evaluate(raw []byte, overrides argolua.ResourceHealthOverrides, flux *fluxReaders) line {
	// Decode the way client-go does for unstructured objects: integers become int64, which the
	// tools rely on (e.g. Flux reads status.observedGeneration with NestedInt64).
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(bytes.TrimSpace(raw)); err != nil {
		bad := verdict{Error: "decoding object: " + err.Error()}
		return line{bad, bad, bad}
	}
	return line{
		KStatus: guard(func() verdict { return kstatusVerdict(u.DeepCopy()) }),
		ArgoCD:  guard(func() verdict { return argoVerdict(u.DeepCopy(), overrides) }),
		Flux:    guard(func() verdict { return fluxVerdict(u.DeepCopy(), flux) }),
	}
}

func kstatusVerdict(u *unstructured.Unstructured) verdict {
	res, err := status.Compute(u)
	if err != nil {
		return verdict{Error: err.Error()}
	}
	return verdict{Status: res.Status.String(), Message: res.Message}
}

func argoVerdict(u *unstructured.Unstructured, overrides argolua.ResourceHealthOverrides) verdict {
	hs, err := health.GetResourceHealth(u, overrides)
	v := verdict{}
	if hs != nil {
		v.Status, v.Message = string(hs.Status), hs.Message
	}
	if err != nil {
		v.Error = err.Error()
	} else if hs == nil {
		// No script and no built-in check: Argo CD records no health for the resource.
		v.Message = "no health assessment (Argo CD records none for this kind)"
	}
	return v
}

// fluxStatusReader builds the status reader kustomize-controller's poller uses for a
// Kustomization with spec.healthCheckExprs.
func fluxStatusReader(path string) (*fluxReaders, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ks kustomizev1.Kustomization
	if err := yaml.Unmarshal(data, &ks); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(ks.Spec.HealthCheckExprs) == 0 {
		return nil, fmt.Errorf("%s: no spec.healthCheckExprs", path)
	}
	ctor, err := fluxcel.NewStatusReader(ks.Spec.HealthCheckExprs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// Objects are evaluated as given, so no kind needs resolving through a RESTMapper.
	mapper := meta.NewDefaultRESTMapper(nil)
	cel := ctor(mapper)
	return &fluxReaders{
		cel: cel,
		all: fluxreaders.NewStatusReader(mapper, fluxjob.NewCustomJobStatusReader(mapper), cel),
	}, nil
}

// fluxReaders is Flux's reader chain (all); cel is kept to report which reader answered.
type fluxReaders struct {
	cel engine.StatusReader
	all engine.StatusReader
}

func fluxVerdict(u *unstructured.Unstructured, r *fluxReaders) verdict {
	reader := "default"
	if r.cel.Supports(u.GroupVersionKind().GroupKind()) {
		reader = "healthCheckExprs"
	}
	rs, err := r.all.ReadStatusForObject(context.Background(), noCluster{}, u)
	if err != nil {
		return verdict{Reader: reader, Error: err.Error()}
	}
	v := verdict{Status: rs.Status.String(), Message: rs.Message, Reader: reader}
	if rs.Error != nil {
		v.Error = rs.Error.Error()
	}
	return v
}

// noCluster is the engine.ClusterReader handed to Flux's readers: objects are judged on their
// own, so readers that look up generated objects (Deployment -> ReplicaSets ...) get an error.
type noCluster struct{}

var errNoCluster = errors.New("gitops-verdicts evaluates objects offline; no cluster to read")

func (noCluster) Get(context.Context, client.ObjectKey, *unstructured.Unstructured) error {
	return errNoCluster
}
func (noCluster) ListNamespaceScoped(context.Context, *unstructured.UnstructuredList, string, labels.Selector) error {
	return errNoCluster
}
func (noCluster) ListClusterScoped(context.Context, *unstructured.UnstructuredList, labels.Selector) error {
	return errNoCluster
}
func (noCluster) Sync(context.Context) error { return nil }

// guard turns a panic inside a tool into an error entry for that tool.
func guard(f func() verdict) (v verdict) {
	defer func() {
		if p := recover(); p != nil {
			v = verdict{Error: fmt.Sprintf("panic: %v", p)}
		}
	}()
	return f()
}

func writeLine(w *bufio.Writer, l line) {
	b, err := json.Marshal(l)
	if err != nil {
		fatal(err)
	}
	w.Write(append(b, '\n'))
	w.Flush()
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "gitops-verdicts:", err)
	os.Exit(1)
}
