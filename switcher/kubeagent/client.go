package kubeagent

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	resourcev1 "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

// Client is what the agent uses of the API server: REST clients for the
// three API groups it reads and writes, over a scheme that knows only
// their types. (client-go's typed clients register every API group's
// types, which would add some 12 MB to proxyd's binary.)
type Client struct {
	core, resource, events rest.Interface
	params                 kruntime.ParameterCodec
}

// NewClient connects to the API server: through kubeconfig if set, else
// with the pod's service account (in-cluster). Requests are bounded by
// their contexts (Options.APITimeout).
func NewClient(kubeconfig string) (Client, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		if kubeconfig == "" {
			return Client{}, fmt.Errorf("kubernetes: not in a pod with a service account and no [switcher.kubernetes] kubeconfig: %w", err)
		}
		return Client{}, fmt.Errorf("kubernetes: reading kubeconfig %s: %w", kubeconfig, err)
	}
	// client-go logs through klog to stderr, outside proxyd's JSON log;
	// what matters (the API server not answering) the agent logs itself.
	klog.SetLogger(logr.Discard())
	return NewClientForConfig(cfg)
}

// NewClientForConfig builds the client from a rest.Config.
func NewClientForConfig(cfg *rest.Config) (Client, error) {
	scheme := kruntime.NewScheme()
	for _, add := range []func(*kruntime.Scheme) error{corev1.AddToScheme, resourcev1.AddToScheme, eventsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return Client{}, fmt.Errorf("kubernetes: scheme: %w", err)
		}
	}
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	codecs := serializer.NewCodecFactory(scheme)
	group := func(gv schema.GroupVersion, apiPath string) (rest.Interface, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion, c.APIPath = &gv, apiPath
		c.NegotiatedSerializer = codecs.WithoutConversion()
		c.ContentType = "application/json"
		c.UserAgent = "proxyd"
		return rest.RESTClientFor(c)
	}
	var cl Client
	var err error
	if cl.core, err = group(corev1.SchemeGroupVersion, "/api"); err == nil {
		if cl.resource, err = group(resourcev1.SchemeGroupVersion, "/apis"); err == nil {
			cl.events, err = group(eventsv1.SchemeGroupVersion, "/apis")
		}
	}
	if err != nil {
		return Client{}, fmt.Errorf("kubernetes: building the client: %w", err)
	}
	cl.params = kruntime.NewParameterCodec(scheme)
	return cl, nil
}

func (c Client) ok() bool { return c.core != nil && c.resource != nil && c.events != nil }

// list and watchAll read one resource of a group in every namespace.
func (c Client) list(ctx context.Context, rc rest.Interface, resource string, lo metav1.ListOptions, into kruntime.Object) error {
	return rc.Get().Resource(resource).VersionedParams(&lo, c.params).Do(ctx).Into(into)
}

func (c Client) watchAll(ctx context.Context, rc rest.Interface, resource string, lo metav1.ListOptions) (watch.Interface, error) {
	lo.Watch = true
	return rc.Get().Resource(resource).VersionedParams(&lo, c.params).Watch(ctx)
}

// createRule and updateRule return the rule as stored (its generation
// is what the eviction controller's status must observe).
func (c Client) createRule(ctx context.Context, r *resourcev1.DeviceTaintRule) (*resourcev1.DeviceTaintRule, error) {
	var out resourcev1.DeviceTaintRule
	err := c.resource.Post().Resource("devicetaintrules").VersionedParams(&metav1.CreateOptions{FieldManager: ManagedByValue}, c.params).
		Body(r).Do(ctx).Into(&out)
	return &out, err
}

func (c Client) getRule(ctx context.Context, name string) (*resourcev1.DeviceTaintRule, error) {
	var r resourcev1.DeviceTaintRule
	err := c.resource.Get().Resource("devicetaintrules").Name(name).Do(ctx).Into(&r)
	return &r, err
}

func (c Client) updateRule(ctx context.Context, r *resourcev1.DeviceTaintRule) (*resourcev1.DeviceTaintRule, error) {
	var out resourcev1.DeviceTaintRule
	err := c.resource.Put().Resource("devicetaintrules").Name(r.Name).
		VersionedParams(&metav1.UpdateOptions{FieldManager: ManagedByValue}, c.params).Body(r).Do(ctx).Into(&out)
	return &out, err
}

func (c Client) deleteRule(ctx context.Context, name string) error {
	return c.resource.Delete().Resource("devicetaintrules").Name(name).Body(&metav1.DeleteOptions{}).Do(ctx).Error()
}

func (c Client) listClaims(ctx context.Context) (*resourcev1.ResourceClaimList, error) {
	var l resourcev1.ResourceClaimList
	err := c.list(ctx, c.resource, "resourceclaims", metav1.ListOptions{}, &l)
	return &l, err
}

func (c Client) createEvent(ctx context.Context, ev *eventsv1.Event) error {
	return c.events.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(ctx).Error()
}

// version asks the API server for its version (any authenticated user may).
func (c Client) version(ctx context.Context) error {
	return c.core.Get().AbsPath("/version").Do(ctx).Error()
}
