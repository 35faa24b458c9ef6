// Command controller-runtime-widget is the controller-runtime peer of the bonny-rs benchmark: the
// Widget controller of bonny-rs's end-to-end tests (tests/src/widget.rs) written the way a typical
// kubebuilder-style author would. A Widget gets a finalizer, a ConfigMap "<name>-data" holding
// its size (owned by it, via CreateOrUpdate), a "Resized" event when the size changes, and a
// status with the size and a Ready condition (Status().Update on every reconcile). The metrics
// server and the health probes are off, and so is leader election unless LEADER_ELECTION=1. It
// reads KUBECONFIG.
package main

import (
	"context"
	"os"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/recorder"
)

const finalizer = "e2e.bonny.dev/cleanup"

var groupVersion = schema.GroupVersion{Group: "e2e.bonny.dev", Version: "v1"}

// WidgetSpec is the desired state.
type WidgetSpec struct {
	Size int64 `json:"size"`
}

// WidgetStatus is the observed state.
type WidgetStatus struct {
	Size       *int64             `json:"size,omitempty"`
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Widget is the custom resource e2e.bonny.dev/v1 Widget.
type Widget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              WidgetSpec   `json:"spec"`
	Status            WidgetStatus `json:"status,omitempty"`
}

// WidgetList is a list of Widgets.
type WidgetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Widget `json:"items"`
}

// DeepCopyInto copies w into out (what controller-gen would generate).
func (w *Widget) DeepCopyInto(out *Widget) {
	*out = *w
	out.TypeMeta = w.TypeMeta
	w.ObjectMeta.DeepCopyInto(&out.ObjectMeta)
	if w.Status.Size != nil {
		size := *w.Status.Size
		out.Status.Size = &size
	}
	if w.Status.Conditions != nil {
		out.Status.Conditions = make([]metav1.Condition, len(w.Status.Conditions))
		for i := range w.Status.Conditions {
			w.Status.Conditions[i].DeepCopyInto(&out.Status.Conditions[i])
		}
	}
}

// DeepCopyObject implements runtime.Object.
func (w *Widget) DeepCopyObject() runtime.Object {
	out := new(Widget)
	w.DeepCopyInto(out)
	return out
}

// DeepCopyObject implements runtime.Object.
func (l *WidgetList) DeepCopyObject() runtime.Object {
	out := new(WidgetList)
	*out = *l
	l.ListMeta.DeepCopyInto(&out.ListMeta)
	if l.Items != nil {
		out.Items = make([]Widget, len(l.Items))
		for i := range l.Items {
			l.Items[i].DeepCopyInto(&out.Items[i])
		}
	}
	return out
}

type widgetReconciler struct {
	client.Client
	recorder recorder.EventRecorder
}

func (r *widgetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var widget Widget
	if err := r.Get(ctx, req.NamespacedName, &widget); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !widget.DeletionTimestamp.IsZero() {
		// Nothing outside the cluster to clean up; the ConfigMap goes with its owner.
		if controllerutil.RemoveFinalizer(&widget, finalizer) {
			if err := r.Update(ctx, &widget); err != nil {
				return ctrl.Result{}, err
			}
		}
		return ctrl.Result{}, nil
	}
	if controllerutil.AddFinalizer(&widget, finalizer) {
		if err := r.Update(ctx, &widget); err != nil {
			return ctrl.Result{}, err
		}
	}

	size := widget.Spec.Size
	configMap := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Name:      widget.Name + "-data",
		Namespace: widget.Namespace,
	}}
	if _, err := controllerutil.CreateOrUpdate(ctx, r.Client, configMap, func() error {
		configMap.Data = map[string]string{"size": strconv.FormatInt(size, 10)}
		return controllerutil.SetControllerReference(&widget, configMap, r.Scheme())
	}); err != nil {
		return ctrl.Result{}, err
	}

	if widget.Status.Size == nil || *widget.Status.Size != size {
		r.recorder.Eventf(&widget, nil, corev1.EventTypeNormal, "Resized", "Reconcile", "size is now %d", size)
	}
	widget.Status.Size = &size
	meta.SetStatusCondition(&widget.Status.Conditions, metav1.Condition{
		Type:               "Ready",
		Status:             metav1.ConditionTrue,
		Reason:             "Reconciled",
		Message:            "the ConfigMap holds the size",
		ObservedGeneration: widget.Generation,
	})
	if err := r.Status().Update(ctx, &widget); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, nil
}

func main() {
	ctrl.SetLogger(zap.New())
	log := ctrl.Log.WithName("controller-runtime-widget")

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		log.Error(err, "register the client-go types")
		os.Exit(1)
	}
	scheme.AddKnownTypes(groupVersion, &Widget{}, &WidgetList{})
	metav1.AddToGroupVersion(scheme, groupVersion)

	// LEADER_ELECTION=1 (the bench's failover scenario): a Lease "controller-runtime-widget"
	// in LEADER_ELECTION_NAMESPACE, with controller-runtime's default timings (15 s, 10 s, 2 s).
	leaderElection := os.Getenv("LEADER_ELECTION") == "1"
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		LeaderElection:          leaderElection,
		LeaderElectionID:        "controller-runtime-widget",
		LeaderElectionNamespace: os.Getenv("LEADER_ELECTION_NAMESPACE"),
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
	})
	if err != nil {
		log.Error(err, "create the manager")
		os.Exit(1)
	}
	reconciler := &widgetReconciler{
		Client:   mgr.GetClient(),
		recorder: mgr.GetEventRecorder("controller-runtime-widget"),
	}
	if err := ctrl.NewControllerManagedBy(mgr).
		For(&Widget{}).
		Owns(&corev1.ConfigMap{}).
		Named("widget").
		Complete(reconciler); err != nil {
		log.Error(err, "create the controller")
		os.Exit(1)
	}
	log.Info("starting")
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "run the manager")
		os.Exit(1)
	}
}
