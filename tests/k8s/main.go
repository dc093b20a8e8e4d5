// k8s-check FILE...: validate sluice's Kubernetes manifests offline.
//
// Each YAML document is decoded strictly (sigs.k8s.io/yaml's UnmarshalStrict:
// an unknown or duplicated field is an error) into its type from the
// Kubernetes API (k8s.io/api) or, for a ScaledObject, KEDA v2.16's API
// type as keda.go declares it. Then the set is checked
// as a whole: the Service, the PodDisruptionBudget and every ScaledObject
// point at the Deployment, the probes ask /healthz and /readyz, the
// container adds only the capabilities the sandbox needs, the config map
// holds sluice.yaml, and the variables a KEDA trigger reads (*FromEnv) exist
// on the target's container.
//
// Prints one line per document and "k8s-check: N ok, N problems".
package main

import (
	"bytes"
	"fmt"
	"os"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The capabilities docs/SECURITY.md lists for the strict sandbox.
var sandboxCaps = []string{"DAC_OVERRIDE", "KILL", "MKNOD", "NET_ADMIN", "SETGID", "SETPCAP",
	"SETUID", "SYS_ADMIN"}

// KEDA trigger types the manifests may use (the scalers named in the README).
var triggerTypes = map[string]bool{"kafka": true, "redis-streams": true, "prometheus": true}

type doc struct {
	file string
	n    int
	obj  any
}

type set struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	pdbs        []*policyv1.PodDisruptionBudget
	scaled      []*ScaledObject
}

func decode(raw []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return nil, err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "keda.sh/v1alpha1 ScaledObject":
		obj = &ScaledObject{}
	default:
		return nil, fmt.Errorf("unexpected apiVersion/kind %q %q", tm.APIVersion, tm.Kind)
	}
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		return nil, err
	}
	return obj, nil
}

// Documents of a file, split at "---" lines; empty ones (comments only) dropped.
func documents(data []byte) [][]byte {
	var out [][]byte
	for _, part := range bytes.Split(data, []byte("\n---")) {
		keep := false
		for _, line := range strings.Split(string(part), "\n") {
			t := strings.TrimSpace(line)
			if t != "" && !strings.HasPrefix(t, "#") && t != "---" {
				keep = true
				break
			}
		}
		if keep {
			out = append(out, part)
		}
	}
	return out
}

func (s *set) add(obj any) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		s.deployments = append(s.deployments, o)
	case *corev1.Service:
		s.services = append(s.services, o)
	case *corev1.ConfigMap:
		s.configMaps = append(s.configMaps, o)
	case *policyv1.PodDisruptionBudget:
		s.pdbs = append(s.pdbs, o)
	case *ScaledObject:
		s.scaled = append(s.scaled, o)
	}
}

func probePath(p *corev1.Probe) string {
	if p == nil || p.HTTPGet == nil {
		return ""
	}
	return p.HTTPGet.Path
}

func selects(sel map[string]string, podLabels map[string]string) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(labels.Set(podLabels))
}

// Whole-set checks; each problem is one string.
func (s *set) check() []string {
	var errs []string
	bad := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }

	if len(s.deployments) != 1 {
		return []string{fmt.Sprintf("want one Deployment, found %d", len(s.deployments))}
	}
	d := s.deployments[0]
	podLabels := d.Spec.Template.Labels
	if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, podLabels) {
		bad("Deployment %s: its selector does not match its pod template's labels", d.Name)
	}
	if len(d.Spec.Template.Spec.Containers) != 1 {
		bad("Deployment %s: want one container", d.Name)
		return errs
	}
	c := d.Spec.Template.Spec.Containers[0]
	if p := probePath(c.LivenessProbe); p != "/healthz" {
		bad("container %s: liveness probe on %q, want /healthz", c.Name, p)
	}
	if p := probePath(c.ReadinessProbe); p != "/readyz" {
		bad("container %s: readiness probe on %q, want /readyz", c.Name, p)
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		bad("container %s: no securityContext.capabilities", c.Name)
	} else {
		var add []string
		for _, cp := range sc.Capabilities.Add {
			add = append(add, string(cp))
		}
		sort.Strings(add)
		if strings.Join(add, ",") != strings.Join(sandboxCaps, ",") {
			bad("container %s: capabilities add %v, want exactly %v", c.Name, add, sandboxCaps)
		}
		if len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
			bad("container %s: capabilities must drop ALL", c.Name)
		}
		if sc.Privileged != nil && *sc.Privileged {
			bad("container %s: privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			bad("container %s: allowPrivilegeEscalation must be false (no_new_privs)", c.Name)
		}
	}
	grace := int64(30)
	if d.Spec.Template.Spec.TerminationGracePeriodSeconds != nil {
		grace = *d.Spec.Template.Spec.TerminationGracePeriodSeconds
	}
	if grace <= 30 {
		bad("Deployment %s: terminationGracePeriodSeconds %d leaves no room above "+
			"server.shutdown_grace_s (30)", d.Name, grace)
	}
	env := map[string]bool{}
	for _, e := range c.Env {
		env[e.Name] = true
	}
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
	}

	// the config map the container mounts, with sluice.yaml in it
	mounted := map[string]bool{}
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			mounted[v.ConfigMap.Name] = true
		}
	}
	found := false
	for _, cm := range s.configMaps {
		if mounted[cm.Name] {
			found = true
			if !strings.Contains(cm.Data["sluice.yaml"], "functions:") {
				bad("ConfigMap %s: no sluice.yaml with functions", cm.Name)
			}
		}
	}
	if !found {
		bad("Deployment %s mounts no ConfigMap of the set", d.Name)
	}

	for _, svc := range s.services {
		if !selects(svc.Spec.Selector, podLabels) {
			bad("Service %s: selector %v selects no pod of Deployment %s", svc.Name,
				svc.Spec.Selector, d.Name)
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.StrVal != "" && !ports[p.TargetPort.StrVal] {
				bad("Service %s: targetPort %q is no port of the container", svc.Name,
					p.TargetPort.StrVal)
			}
		}
	}
	if len(s.services) == 0 {
		bad("no Service")
	}
	for _, pdb := range s.pdbs {
		if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, podLabels) {
			bad("PodDisruptionBudget %s selects no pod of Deployment %s", pdb.Name, d.Name)
		}
	}
	if len(s.pdbs) == 0 {
		bad("no PodDisruptionBudget")
	}

	kinds := map[string]bool{}
	for _, so := range s.scaled {
		t := so.Spec.ScaleTargetRef
		if t == nil || t.Name != d.Name || (t.Kind != "" && t.Kind != "Deployment") {
			bad("ScaledObject %s: scaleTargetRef is not Deployment %s", so.Name, d.Name)
		}
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
			bad("ScaledObject %s: minReplicaCount must be at least 1 (a source needs a "+
				"consumer to have lag measured)", so.Name)
		}
		if len(so.Spec.Triggers) == 0 {
			bad("ScaledObject %s: no triggers", so.Name)
		}
		for _, tr := range so.Spec.Triggers {
			if !triggerTypes[tr.Type] {
				bad("ScaledObject %s: trigger type %q", so.Name, tr.Type)
			}
			kinds[tr.Type] = true
			for k, v := range tr.Metadata {
				if strings.HasSuffix(k, "FromEnv") && !env[v] {
					bad("ScaledObject %s: %s names %s, which container %s does not set",
						so.Name, k, v, c.Name)
				}
			}
		}
	}
	for k := range triggerTypes {
		if !kinds[k] {
			bad("no ScaledObject with a %s trigger", k)
		}
	}
	return errs
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k8s-check FILE...")
		os.Exit(2)
	}
	var s set
	passed, failed := 0, 0
	for _, file := range os.Args[1:] {
		data, err := os.ReadFile(file)
		if err != nil {
			fmt.Printf("FAIL %s: %v\n", file, err)
			failed++
			continue
		}
		for i, raw := range documents(data) {
			obj, err := decode(raw)
			if err != nil {
				fmt.Printf("FAIL %s: document %d: %v\n", file, i+1, err)
				failed++
				continue
			}
			m := obj.(metav1.Object)
			fmt.Printf("ok   %s: %T %s\n", file, obj, m.GetName())
			s.add(obj)
			passed++
		}
	}
	for _, e := range s.check() {
		fmt.Printf("FAIL set: %s\n", e)
		failed++
	}
	if failed == 0 {
		fmt.Println("ok   set: the manifests refer to each other consistently")
		passed++
	}
	fmt.Printf("k8s-check: %d ok, %d problems\n", passed, failed)
	if failed > 0 {
		os.Exit(1)
	}
}
