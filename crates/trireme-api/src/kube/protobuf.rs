//! kubectl's protobuf request bodies (`application/vnd.kubernetes.protobuf`, KUBE-API.md §11).
//!
//! kubectl 1.32 sends the object of every `kubectl create <kind>` generator as protobuf, with
//! no fallback to JSON: the magic `k8s\0`, then a `runtime.Unknown` { typeMeta {apiVersion,
//! kind}, raw, contentEncoding, contentType } whose `raw` is the object's message. [`decode`]
//! reads it with the `k8s-pb` message types and maps it by hand to the JSON object
//! kube-apiserver would have received: JSON field names, maps, `bytes` as base64, times as
//! RFC 3339, `IntOrString` and `Quantity` as JSON values. The object then takes the JSON path.
//!
//! Zero values: gogo-protobuf (the Go side) always emits non-pointer fields, so their zero
//! values (`""`, 0, false) are dropped here as Go's `omitempty` drops them. Pointer fields
//! (`replicas`, `immutable`, `revisionHistoryLimit`...) are kept whatever their value.
//! Embedded messages are kept when present (Go's JSON writes `"strategy": {}` too); a zero
//! `Time` (an unset `creationTimestamp`) is dropped.
//!
//! Nothing is lost silently: each converter takes the fields it maps out of its message and
//! [`finish`] refuses the message with 415 if anything is left set (a field this module does
//! not map, e.g. a probe), so the client knows to send JSON instead.
//!
//! Kinds: Namespace, ConfigMap, Secret, ServiceAccount, Service (core/v1), Deployment
//! (apps/v1), Lease (coordination.k8s.io/v1). Any other kind answers 415.

use std::collections::BTreeMap;
use std::mem::take;

use axum::http::StatusCode;
use base64::Engine;
use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::status::KubeError;

/// The request `Content-Type` of a protobuf body.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Every Kubernetes protobuf document starts with these four bytes.
const MAGIC: &[u8] = b"k8s\0";

type R<T> = Result<T, KubeError>;

/// Decodes a protobuf request body into the JSON object it stands for (with `apiVersion`
/// and `kind` from the envelope). A body without the magic, or with a kind or field this
/// module cannot map, is a 415; a malformed envelope or message is a 400.
pub fn decode(body: &[u8]) -> R<Map<String, Value>> {
    // Without the magic the body is in no format this server knows: 415, as for any
    // other unknown media (a JSON body sent with the protobuf Content-Type lands here).
    let envelope = body.strip_prefix(MAGIC).ok_or_else(|| {
        unsupported(
            "the protobuf body does not start with the Kubernetes magic number \"k8s\\x00\" - accepted media types include: application/json, application/vnd.kubernetes.protobuf".into(),
        )
    })?;
    let unknown = Unknown::decode(envelope).map_err(|e| {
        KubeError::bad_request(format!(
            "the body of the request could not be decoded as a protobuf runtime.Unknown: {e}"
        ))
    })?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if let Some(encoding) = unknown.content_encoding.filter(|e| !e.is_empty()) {
        return Err(unsupported(format!(
            "the protobuf body's content encoding {encoding:?} is not supported"
        )));
    }
    let raw = unknown.raw.unwrap_or_default();
    let object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(message(&raw, &kind)?)?,
        ("v1", "ConfigMap") => config_map(message(&raw, &kind)?)?,
        ("v1", "Secret") => secret(message(&raw, &kind)?)?,
        ("v1", "ServiceAccount") => service_account(message(&raw, &kind)?)?,
        ("v1", "Service") => service(message(&raw, &kind)?)?,
        ("apps/v1", "Deployment") => deployment(message(&raw, &kind)?)?,
        ("coordination.k8s.io/v1", "Lease") => lease(message(&raw, &kind)?)?,
        _ => {
            return Err(unsupported(format!(
                "this server cannot decode a {api_version:?} {kind:?} from protobuf - accepted media types include: application/json"
            )))
        }
    };
    let Value::Object(mut object) = object else {
        return Err(KubeError::bad_request(
            "the protobuf object is not an object",
        ));
    };
    object.insert("apiVersion".into(), json!(api_version));
    object.insert("kind".into(), json!(kind));
    Ok(object)
}

fn unsupported(message: String) -> KubeError {
    KubeError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        message,
    )
}

fn message<M: Message + Default>(raw: &[u8], kind: &str) -> R<M> {
    M::decode(raw).map_err(|e| {
        KubeError::bad_request(format!(
            "the {kind} in the protobuf body could not be decoded: {e}"
        ))
    })
}

/// Refuses a message that still has a field set after its converter took the ones it maps.
fn finish<M: Message + Default + PartialEq>(rest: M, what: &str) -> R<()> {
    if rest == M::default() {
        return Ok(());
    }
    Err(unsupported(format!(
        "this server cannot decode {what} field(s) {:?} (protobuf tags) from protobuf - send the object as application/json",
        field_tags(&rest.encode_to_vec())
    )))
}

/// The tags of the fields in an encoded message (for the error message only; the walk
/// stops at anything unexpected).
fn field_tags(mut buf: &[u8]) -> Vec<u32> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut tags = Vec::new();
    while let Some(key) = varint(&mut buf) {
        let Ok(tag) = u32::try_from(key >> 3) else {
            break;
        };
        if !tags.contains(&tag) {
            tags.push(tag);
        }
        let skip = match key & 7 {
            0 => varint(&mut buf).map(|_| 0),
            1 => Some(8),
            2 => varint(&mut buf).and_then(|n| usize::try_from(n).ok()),
            5 => Some(4),
            _ => None,
        };
        match skip.and_then(|n| buf.get(n..)) {
            Some(rest) => buf = rest,
            None => break,
        }
    }
    tags
}

/// A JSON object built from a message's fields.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(&mut self, k: &str, v: Value) {
        self.0.insert(k.to_string(), v);
    }

    /// A non-pointer string: `""` is Go's zero value and is dropped.
    fn str(&mut self, k: &str, v: Option<String>) {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            self.put(k, Value::String(v));
        }
    }

    /// A pointer string (`*string`): kept when present.
    fn ptr_str(&mut self, k: &str, v: Option<String>) {
        if let Some(v) = v {
            self.put(k, Value::String(v));
        }
    }

    /// A non-pointer integer: 0 is dropped.
    fn int<T: Into<i64>>(&mut self, k: &str, v: Option<T>) {
        if let Some(v) = v.map(Into::into).filter(|v| *v != 0) {
            self.put(k, json!(v));
        }
    }

    /// A pointer integer: kept when present, 0 too.
    fn ptr_int<T: Into<i64>>(&mut self, k: &str, v: Option<T>) {
        if let Some(v) = v {
            self.put(k, json!(v.into()));
        }
    }

    /// A non-pointer bool: false is dropped.
    fn bool(&mut self, k: &str, v: Option<bool>) {
        if v == Some(true) {
            self.put(k, json!(true));
        }
    }

    /// A pointer bool: kept when present, false too.
    fn ptr_bool(&mut self, k: &str, v: Option<bool>) {
        if let Some(v) = v {
            self.put(k, json!(v));
        }
    }

    fn strs(&mut self, k: &str, v: Vec<String>) {
        if !v.is_empty() {
            self.put(k, json!(v));
        }
    }

    fn map(&mut self, k: &str, v: BTreeMap<String, String>) {
        if !v.is_empty() {
            self.put(
                k,
                Value::Object(v.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
            );
        }
    }

    /// `map<string, bytes>`: the values as base64, as Go's JSON writes `[]byte`.
    fn bytes_map(&mut self, k: &str, v: BTreeMap<String, Vec<u8>>) {
        if !v.is_empty() {
            let b64 = base64::engine::general_purpose::STANDARD;
            self.put(
                k,
                Value::Object(
                    v.into_iter()
                        .map(|(k, v)| (k, Value::String(b64.encode(v))))
                        .collect(),
                ),
            );
        }
    }

    /// `map<string, Quantity>`: the quantities as their strings.
    fn quantities(&mut self, k: &str, v: BTreeMap<String, Quantity>) -> R<()> {
        if !v.is_empty() {
            let mut m = Map::new();
            for (name, q) in v {
                m.insert(name, quantity(q)?);
            }
            self.put(k, Value::Object(m));
        }
        Ok(())
    }

    /// An embedded message, when present (even empty).
    fn msg<M>(&mut self, k: &str, v: Option<M>, f: impl FnOnce(M) -> R<Value>) -> R<()> {
        if let Some(m) = v {
            let v = f(m)?;
            self.put(k, v);
        }
        Ok(())
    }

    fn list<M>(&mut self, k: &str, v: Vec<M>, f: impl FnMut(M) -> R<Value>) -> R<()> {
        if !v.is_empty() {
            let items = v.into_iter().map(f).collect::<R<Vec<_>>>()?;
            self.put(k, Value::Array(items));
        }
        Ok(())
    }

    /// A `metav1.Time`: RFC 3339 in whole seconds; the zero time is dropped.
    fn time(&mut self, k: &str, v: Option<meta::Time>) -> R<()> {
        if let Some(t) = v {
            let (seconds, nanos) = (t.seconds.unwrap_or(0), t.nanos.unwrap_or(0));
            if seconds != 0 || nanos != 0 {
                self.put(k, Value::String(rfc3339(seconds, None)?));
            }
        }
        Ok(())
    }

    /// A `metav1.MicroTime`: RFC 3339 with six fractional digits; the zero time is dropped.
    fn micro_time(&mut self, k: &str, v: Option<meta::MicroTime>) -> R<()> {
        if let Some(t) = v {
            let (seconds, nanos) = (t.seconds.unwrap_or(0), t.nanos.unwrap_or(0));
            if seconds != 0 || nanos != 0 {
                self.put(k, Value::String(rfc3339(seconds, Some(nanos))?));
            }
        }
        Ok(())
    }

    /// An inlined message (Go's `json:",inline"`): its fields join this object's.
    fn inline_msg<M>(&mut self, v: Option<M>, f: impl FnOnce(M) -> R<Value>) -> R<()> {
        if let Some(m) = v {
            if let Value::Object(fields) = f(m)? {
                self.0.extend(fields);
            }
        }
        Ok(())
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn rfc3339(seconds: i64, micro_from_nanos: Option<i32>) -> R<String> {
    let bad = || {
        KubeError::bad_request(format!(
            "the protobuf body holds an invalid time ({seconds} s)"
        ))
    };
    let t = OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| bad())?;
    let s = t.format(&Rfc3339).map_err(|_| bad())?;
    match micro_from_nanos {
        None => Ok(s),
        Some(nanos) => {
            if !(0..1_000_000_000).contains(&nanos) {
                return Err(bad());
            }
            let base = s.strip_suffix('Z').ok_or_else(bad)?;
            Ok(format!("{base}.{:06}Z", nanos / 1000))
        }
    }
}

fn quantity(mut q: Quantity) -> R<Value> {
    let s = q.string.take().unwrap_or_default();
    finish(q, "Quantity")?;
    Ok(Value::String(s))
}

/// `IntOrString`: type 1 is a string, anything else the int.
fn int_or_string(mut v: IntOrString) -> R<Value> {
    let out = if v.r#type.take() == Some(1) {
        v.int_val.take();
        Value::String(v.str_val.take().unwrap_or_default())
    } else {
        v.str_val.take();
        json!(v.int_val.take().unwrap_or(0))
    };
    finish(v, "IntOrString")?;
    Ok(out)
}

/// A non-pointer `IntOrString`: the zero value (int 0) is dropped.
fn put_int_or_string(o: &mut Obj, k: &str, v: Option<IntOrString>) -> R<()> {
    if let Some(v) = v {
        let v = int_or_string(v)?;
        if v != json!(0) {
            o.put(k, v);
        }
    }
    Ok(())
}

// ---- meta/v1 ----

fn object_meta(mut m: meta::ObjectMeta) -> R<Value> {
    let mut o = Obj::default();
    o.str("name", m.name.take());
    o.str("generateName", m.generate_name.take());
    o.str("namespace", m.namespace.take());
    m.self_link.take(); // deprecated; never stored
    o.str("uid", m.uid.take());
    o.str("resourceVersion", m.resource_version.take());
    o.int("generation", m.generation.take());
    o.time("creationTimestamp", m.creation_timestamp.take())?;
    o.time("deletionTimestamp", m.deletion_timestamp.take())?;
    o.ptr_int(
        "deletionGracePeriodSeconds",
        m.deletion_grace_period_seconds.take(),
    );
    o.map("labels", take(&mut m.labels));
    o.map("annotations", take(&mut m.annotations));
    o.list(
        "ownerReferences",
        take(&mut m.owner_references),
        owner_reference,
    )?;
    o.strs("finalizers", take(&mut m.finalizers));
    take(&mut m.managed_fields); // this server keeps no managedFields
    finish(m, "ObjectMeta")?;
    Ok(o.done())
}

fn owner_reference(mut r: meta::OwnerReference) -> R<Value> {
    let mut o = Obj::default();
    o.str("apiVersion", r.api_version.take());
    o.str("kind", r.kind.take());
    o.str("name", r.name.take());
    o.str("uid", r.uid.take());
    o.ptr_bool("controller", r.controller.take());
    o.ptr_bool("blockOwnerDeletion", r.block_owner_deletion.take());
    finish(r, "OwnerReference")?;
    Ok(o.done())
}

fn label_selector(mut s: meta::LabelSelector) -> R<Value> {
    let mut o = Obj::default();
    o.map("matchLabels", take(&mut s.match_labels));
    o.list(
        "matchExpressions",
        take(&mut s.match_expressions),
        |mut r| {
            let mut o = Obj::default();
            o.str("key", r.key.take());
            o.str("operator", r.operator.take());
            o.strs("values", take(&mut r.values));
            finish(r, "LabelSelectorRequirement")?;
            Ok(o.done())
        },
    )?;
    finish(s, "LabelSelector")?;
    Ok(o.done())
}

fn condition(mut c: meta::Condition) -> R<Value> {
    let mut o = Obj::default();
    o.str("type", c.r#type.take());
    o.str("status", c.status.take());
    o.int("observedGeneration", c.observed_generation.take());
    o.time("lastTransitionTime", c.last_transition_time.take())?;
    o.str("reason", c.reason.take());
    o.str("message", c.message.take());
    finish(c, "Condition")?;
    Ok(o.done())
}

// ---- core/v1 ----

fn namespace(mut n: core::Namespace) -> R<Value> {
    let mut o = Obj::default();
    o.msg("metadata", n.metadata.take(), object_meta)?;
    o.msg("spec", n.spec.take(), |mut s| {
        let mut o = Obj::default();
        o.strs("finalizers", take(&mut s.finalizers));
        finish(s, "NamespaceSpec")?;
        Ok(o.done())
    })?;
    o.msg("status", n.status.take(), |mut s| {
        let mut o = Obj::default();
        o.str("phase", s.phase.take());
        o.list("conditions", take(&mut s.conditions), |mut c| {
            let mut o = Obj::default();
            o.str("type", c.r#type.take());
            o.str("status", c.status.take());
            o.time("lastTransitionTime", c.last_transition_time.take())?;
            o.str("reason", c.reason.take());
            o.str("message", c.message.take());
            finish(c, "NamespaceCondition")?;
            Ok(o.done())
        })?;
        finish(s, "NamespaceStatus")?;
        Ok(o.done())
    })?;
    finish(n, "Namespace")?;
    Ok(o.done())
}

fn config_map(mut c: core::ConfigMap) -> R<Value> {
    let mut o = Obj::default();
    o.msg("metadata", c.metadata.take(), object_meta)?;
    o.ptr_bool("immutable", c.immutable.take());
    o.map("data", take(&mut c.data));
    o.bytes_map("binaryData", take(&mut c.binary_data));
    finish(c, "ConfigMap")?;
    Ok(o.done())
}

fn secret(mut s: core::Secret) -> R<Value> {
    let mut o = Obj::default();
    o.msg("metadata", s.metadata.take(), object_meta)?;
    o.ptr_bool("immutable", s.immutable.take());
    o.bytes_map("data", take(&mut s.data));
    o.map("stringData", take(&mut s.string_data));
    o.str("type", s.r#type.take());
    finish(s, "Secret")?;
    Ok(o.done())
}

fn local_object_reference(mut r: core::LocalObjectReference) -> R<Value> {
    let mut o = Obj::default();
    o.str("name", r.name.take());
    finish(r, "LocalObjectReference")?;
    Ok(o.done())
}

fn object_reference(mut r: core::ObjectReference) -> R<Value> {
    let mut o = Obj::default();
    o.str("kind", r.kind.take());
    o.str("namespace", r.namespace.take());
    o.str("name", r.name.take());
    o.str("uid", r.uid.take());
    o.str("apiVersion", r.api_version.take());
    o.str("resourceVersion", r.resource_version.take());
    o.str("fieldPath", r.field_path.take());
    finish(r, "ObjectReference")?;
    Ok(o.done())
}

fn service_account(mut a: core::ServiceAccount) -> R<Value> {
    let mut o = Obj::default();
    o.msg("metadata", a.metadata.take(), object_meta)?;
    o.list("secrets", take(&mut a.secrets), object_reference)?;
    o.list(
        "imagePullSecrets",
        take(&mut a.image_pull_secrets),
        local_object_reference,
    )?;
    o.ptr_bool(
        "automountServiceAccountToken",
        a.automount_service_account_token.take(),
    );
    finish(a, "ServiceAccount")?;
    Ok(o.done())
}

fn service(mut s: core::Service) -> R<Value> {
    let mut o = Obj::default();
    o.msg("metadata", s.metadata.take(), object_meta)?;
    o.msg("spec", s.spec.take(), service_spec)?;
    o.msg("status", s.status.take(), |mut st| {
        let mut o = Obj::default();
        o.msg("loadBalancer", st.load_balancer.take(), |lb| {
            // Clients do not create services with load-balancer ingress points.
            finish(lb, "LoadBalancerStatus")?;
            Ok(json!({}))
        })?;
        o.list("conditions", take(&mut st.conditions), condition)?;
        finish(st, "ServiceStatus")?;
        Ok(o.done())
    })?;
    finish(s, "Service")?;
    Ok(o.done())
}

fn service_spec(mut s: core::ServiceSpec) -> R<Value> {
    let mut o = Obj::default();
    o.list("ports", take(&mut s.ports), |mut p| {
        let mut o = Obj::default();
        o.str("name", p.name.take());
        o.str("protocol", p.protocol.take());
        o.ptr_str("appProtocol", p.app_protocol.take());
        o.int("port", p.port.take());
        put_int_or_string(&mut o, "targetPort", p.target_port.take())?;
        o.int("nodePort", p.node_port.take());
        finish(p, "ServicePort")?;
        Ok(o.done())
    })?;
    o.map("selector", take(&mut s.selector));
    o.str("clusterIP", s.cluster_ip.take());
    o.strs("clusterIPs", take(&mut s.cluster_ips));
    o.str("type", s.r#type.take());
    o.strs("externalIPs", take(&mut s.external_ips));
    o.str("sessionAffinity", s.session_affinity.take());
    o.str("loadBalancerIP", s.load_balancer_ip.take());
    o.strs(
        "loadBalancerSourceRanges",
        take(&mut s.load_balancer_source_ranges),
    );
    o.str("externalName", s.external_name.take());
    o.str("externalTrafficPolicy", s.external_traffic_policy.take());
    o.int("healthCheckNodePort", s.health_check_node_port.take());
    o.bool(
        "publishNotReadyAddresses",
        s.publish_not_ready_addresses.take(),
    );
    o.msg(
        "sessionAffinityConfig",
        s.session_affinity_config.take(),
        |mut c| {
            let mut o = Obj::default();
            o.msg("clientIP", c.client_ip.take(), |mut ip| {
                let mut o = Obj::default();
                o.ptr_int("timeoutSeconds", ip.timeout_seconds.take());
                finish(ip, "ClientIPConfig")?;
                Ok(o.done())
            })?;
            finish(c, "SessionAffinityConfig")?;
            Ok(o.done())
        },
    )?;
    o.strs("ipFamilies", take(&mut s.ip_families));
    o.ptr_str("ipFamilyPolicy", s.ip_family_policy.take());
    o.ptr_bool(
        "allocateLoadBalancerNodePorts",
        s.allocate_load_balancer_node_ports.take(),
    );
    o.ptr_str("loadBalancerClass", s.load_balancer_class.take());
    o.ptr_str("internalTrafficPolicy", s.internal_traffic_policy.take());
    o.ptr_str("trafficDistribution", s.traffic_distribution.take());
    finish(s, "ServiceSpec")?;
    Ok(o.done())
}

fn pod_template_spec(mut t: core::PodTemplateSpec) -> R<Value> {
    let mut o = Obj::default();
    o.msg("metadata", t.metadata.take(), object_meta)?;
    o.msg("spec", t.spec.take(), pod_spec)?;
    finish(t, "PodTemplateSpec")?;
    Ok(o.done())
}

fn pod_spec(mut s: core::PodSpec) -> R<Value> {
    let mut o = Obj::default();
    o.list("volumes", take(&mut s.volumes), volume)?;
    o.list("initContainers", take(&mut s.init_containers), container)?;
    o.list("containers", take(&mut s.containers), container)?;
    o.str("restartPolicy", s.restart_policy.take());
    o.ptr_int(
        "terminationGracePeriodSeconds",
        s.termination_grace_period_seconds.take(),
    );
    o.ptr_int("activeDeadlineSeconds", s.active_deadline_seconds.take());
    o.str("dnsPolicy", s.dns_policy.take());
    o.map("nodeSelector", take(&mut s.node_selector));
    o.str("serviceAccountName", s.service_account_name.take());
    o.str("serviceAccount", s.service_account.take());
    o.ptr_bool(
        "automountServiceAccountToken",
        s.automount_service_account_token.take(),
    );
    o.str("nodeName", s.node_name.take());
    o.bool("hostNetwork", s.host_network.take());
    o.bool("hostPID", s.host_pid.take());
    o.bool("hostIPC", s.host_ipc.take());
    o.ptr_bool("shareProcessNamespace", s.share_process_namespace.take());
    o.list(
        "imagePullSecrets",
        take(&mut s.image_pull_secrets),
        local_object_reference,
    )?;
    o.str("hostname", s.hostname.take());
    o.str("subdomain", s.subdomain.take());
    o.str("schedulerName", s.scheduler_name.take());
    o.str("priorityClassName", s.priority_class_name.take());
    o.ptr_int("priority", s.priority.take());
    o.ptr_str("runtimeClassName", s.runtime_class_name.take());
    o.ptr_bool("enableServiceLinks", s.enable_service_links.take());
    o.ptr_str("preemptionPolicy", s.preemption_policy.take());
    o.quantities("overhead", take(&mut s.overhead))?;
    o.ptr_bool("setHostnameAsFQDN", s.set_hostname_as_fqdn.take());
    o.ptr_bool("hostUsers", s.host_users.take());
    o.ptr_str("hostnameOverride", s.hostname_override.take());
    // Left to `finish` (refused when set): securityContext, affinity, tolerations,
    // hostAliases, dnsConfig, readinessGates, topologySpreadConstraints, os,
    // schedulingGates, resourceClaims, resources, ephemeralContainers, workloadRef.
    finish(s, "PodSpec")?;
    Ok(o.done())
}

fn container(mut c: core::Container) -> R<Value> {
    let mut o = Obj::default();
    o.str("name", c.name.take());
    o.str("image", c.image.take());
    o.strs("command", take(&mut c.command));
    o.strs("args", take(&mut c.args));
    o.str("workingDir", c.working_dir.take());
    o.list("ports", take(&mut c.ports), |mut p| {
        let mut o = Obj::default();
        o.str("name", p.name.take());
        o.int("hostPort", p.host_port.take());
        o.int("containerPort", p.container_port.take());
        o.str("protocol", p.protocol.take());
        o.str("hostIP", p.host_ip.take());
        finish(p, "ContainerPort")?;
        Ok(o.done())
    })?;
    o.list("envFrom", take(&mut c.env_from), env_from_source)?;
    o.list("env", take(&mut c.env), env_var)?;
    o.msg("resources", c.resources.take(), resource_requirements)?;
    o.ptr_str("restartPolicy", c.restart_policy.take());
    o.list("volumeMounts", take(&mut c.volume_mounts), |mut m| {
        let mut o = Obj::default();
        o.str("name", m.name.take());
        o.bool("readOnly", m.read_only.take());
        o.ptr_str("recursiveReadOnly", m.recursive_read_only.take());
        o.str("mountPath", m.mount_path.take());
        o.str("subPath", m.sub_path.take());
        o.ptr_str("mountPropagation", m.mount_propagation.take());
        o.str("subPathExpr", m.sub_path_expr.take());
        finish(m, "VolumeMount")?;
        Ok(o.done())
    })?;
    o.str("terminationMessagePath", c.termination_message_path.take());
    o.str(
        "terminationMessagePolicy",
        c.termination_message_policy.take(),
    );
    o.str("imagePullPolicy", c.image_pull_policy.take());
    o.bool("stdin", c.stdin.take());
    o.bool("stdinOnce", c.stdin_once.take());
    o.bool("tty", c.tty.take());
    // Left to `finish` (refused when set): resizePolicy, restartPolicyRules,
    // volumeDevices, the probes, lifecycle, securityContext.
    finish(c, "Container")?;
    Ok(o.done())
}

fn resource_requirements(mut r: core::ResourceRequirements) -> R<Value> {
    let mut o = Obj::default();
    o.quantities("limits", take(&mut r.limits))?;
    o.quantities("requests", take(&mut r.requests))?;
    o.list("claims", take(&mut r.claims), |mut c| {
        let mut o = Obj::default();
        o.str("name", c.name.take());
        o.str("request", c.request.take());
        finish(c, "ResourceClaim")?;
        Ok(o.done())
    })?;
    finish(r, "ResourceRequirements")?;
    Ok(o.done())
}

fn env_var(mut e: core::EnvVar) -> R<Value> {
    let mut o = Obj::default();
    o.str("name", e.name.take());
    o.str("value", e.value.take());
    o.msg("valueFrom", e.value_from.take(), |mut s| {
        let mut o = Obj::default();
        o.msg("fieldRef", s.field_ref.take(), |mut f| {
            let mut o = Obj::default();
            o.str("apiVersion", f.api_version.take());
            o.str("fieldPath", f.field_path.take());
            finish(f, "ObjectFieldSelector")?;
            Ok(o.done())
        })?;
        o.msg("resourceFieldRef", s.resource_field_ref.take(), |mut f| {
            let mut o = Obj::default();
            o.str("containerName", f.container_name.take());
            o.str("resource", f.resource.take());
            o.msg("divisor", f.divisor.take(), quantity)?;
            finish(f, "ResourceFieldSelector")?;
            Ok(o.done())
        })?;
        o.msg("configMapKeyRef", s.config_map_key_ref.take(), |mut k| {
            let mut o = Obj::default();
            o.inline_msg(k.local_object_reference.take(), local_object_reference)?;
            o.str("key", k.key.take());
            o.ptr_bool("optional", k.optional.take());
            finish(k, "ConfigMapKeySelector")?;
            Ok(o.done())
        })?;
        o.msg("secretKeyRef", s.secret_key_ref.take(), |mut k| {
            let mut o = Obj::default();
            o.inline_msg(k.local_object_reference.take(), local_object_reference)?;
            o.str("key", k.key.take());
            o.ptr_bool("optional", k.optional.take());
            finish(k, "SecretKeySelector")?;
            Ok(o.done())
        })?;
        finish(s, "EnvVarSource")?;
        Ok(o.done())
    })?;
    finish(e, "EnvVar")?;
    Ok(o.done())
}

fn env_from_source(mut e: core::EnvFromSource) -> R<Value> {
    let mut o = Obj::default();
    o.str("prefix", e.prefix.take());
    o.msg("configMapRef", e.config_map_ref.take(), |mut r| {
        let mut o = Obj::default();
        o.inline_msg(r.local_object_reference.take(), local_object_reference)?;
        o.ptr_bool("optional", r.optional.take());
        finish(r, "ConfigMapEnvSource")?;
        Ok(o.done())
    })?;
    o.msg("secretRef", e.secret_ref.take(), |mut r| {
        let mut o = Obj::default();
        o.inline_msg(r.local_object_reference.take(), local_object_reference)?;
        o.ptr_bool("optional", r.optional.take());
        finish(r, "SecretEnvSource")?;
        Ok(o.done())
    })?;
    finish(e, "EnvFromSource")?;
    Ok(o.done())
}

fn key_to_path(mut k: core::KeyToPath) -> R<Value> {
    let mut o = Obj::default();
    o.str("key", k.key.take());
    o.str("path", k.path.take());
    o.ptr_int("mode", k.mode.take());
    finish(k, "KeyToPath")?;
    Ok(o.done())
}

fn volume(mut v: core::Volume) -> R<Value> {
    let mut o = Obj::default();
    o.str("name", v.name.take());
    if let Some(mut s) = v.volume_source.take() {
        o.msg("hostPath", s.host_path.take(), |mut h| {
            let mut o = Obj::default();
            o.str("path", h.path.take());
            o.ptr_str("type", h.r#type.take());
            finish(h, "HostPathVolumeSource")?;
            Ok(o.done())
        })?;
        o.msg("emptyDir", s.empty_dir.take(), |mut e| {
            let mut o = Obj::default();
            o.str("medium", e.medium.take());
            o.msg("sizeLimit", e.size_limit.take(), quantity)?;
            finish(e, "EmptyDirVolumeSource")?;
            Ok(o.done())
        })?;
        o.msg("secret", s.secret.take(), |mut e| {
            let mut o = Obj::default();
            o.str("secretName", e.secret_name.take());
            o.list("items", take(&mut e.items), key_to_path)?;
            o.ptr_int("defaultMode", e.default_mode.take());
            o.ptr_bool("optional", e.optional.take());
            finish(e, "SecretVolumeSource")?;
            Ok(o.done())
        })?;
        o.msg("configMap", s.config_map.take(), |mut e| {
            let mut o = Obj::default();
            o.inline_msg(e.local_object_reference.take(), local_object_reference)?;
            o.list("items", take(&mut e.items), key_to_path)?;
            o.ptr_int("defaultMode", e.default_mode.take());
            o.ptr_bool("optional", e.optional.take());
            finish(e, "ConfigMapVolumeSource")?;
            Ok(o.done())
        })?;
        o.msg(
            "persistentVolumeClaim",
            s.persistent_volume_claim.take(),
            |mut e| {
                let mut o = Obj::default();
                o.str("claimName", e.claim_name.take());
                o.bool("readOnly", e.read_only.take());
                finish(e, "PersistentVolumeClaimVolumeSource")?;
                Ok(o.done())
            },
        )?;
        finish(s, "VolumeSource")?;
    }
    finish(v, "Volume")?;
    Ok(o.done())
}

// ---- apps/v1 ----

fn deployment(mut d: apps::Deployment) -> R<Value> {
    let mut o = Obj::default();
    o.msg("metadata", d.metadata.take(), object_meta)?;
    o.msg("spec", d.spec.take(), deployment_spec)?;
    o.msg("status", d.status.take(), deployment_status)?;
    finish(d, "Deployment")?;
    Ok(o.done())
}

fn deployment_spec(mut s: apps::DeploymentSpec) -> R<Value> {
    let mut o = Obj::default();
    o.ptr_int("replicas", s.replicas.take());
    o.msg("selector", s.selector.take(), label_selector)?;
    o.msg("template", s.template.take(), pod_template_spec)?;
    o.msg("strategy", s.strategy.take(), |mut st| {
        let mut o = Obj::default();
        o.str("type", st.r#type.take());
        o.msg("rollingUpdate", st.rolling_update.take(), |mut r| {
            let mut o = Obj::default();
            o.msg("maxUnavailable", r.max_unavailable.take(), int_or_string)?;
            o.msg("maxSurge", r.max_surge.take(), int_or_string)?;
            finish(r, "RollingUpdateDeployment")?;
            Ok(o.done())
        })?;
        finish(st, "DeploymentStrategy")?;
        Ok(o.done())
    })?;
    o.int("minReadySeconds", s.min_ready_seconds.take());
    o.ptr_int("revisionHistoryLimit", s.revision_history_limit.take());
    o.bool("paused", s.paused.take());
    o.ptr_int(
        "progressDeadlineSeconds",
        s.progress_deadline_seconds.take(),
    );
    finish(s, "DeploymentSpec")?;
    Ok(o.done())
}

fn deployment_status(mut s: apps::DeploymentStatus) -> R<Value> {
    let mut o = Obj::default();
    o.int("observedGeneration", s.observed_generation.take());
    o.int("replicas", s.replicas.take());
    o.int("updatedReplicas", s.updated_replicas.take());
    o.int("readyReplicas", s.ready_replicas.take());
    o.int("availableReplicas", s.available_replicas.take());
    o.int("unavailableReplicas", s.unavailable_replicas.take());
    o.ptr_int("terminatingReplicas", s.terminating_replicas.take());
    o.list("conditions", take(&mut s.conditions), |mut c| {
        let mut o = Obj::default();
        o.str("type", c.r#type.take());
        o.str("status", c.status.take());
        o.time("lastUpdateTime", c.last_update_time.take())?;
        o.time("lastTransitionTime", c.last_transition_time.take())?;
        o.str("reason", c.reason.take());
        o.str("message", c.message.take());
        finish(c, "DeploymentCondition")?;
        Ok(o.done())
    })?;
    o.ptr_int("collisionCount", s.collision_count.take());
    finish(s, "DeploymentStatus")?;
    Ok(o.done())
}

// ---- coordination.k8s.io/v1 ----

fn lease(mut l: coordination::Lease) -> R<Value> {
    let mut o = Obj::default();
    o.msg("metadata", l.metadata.take(), object_meta)?;
    o.msg("spec", l.spec.take(), |mut s| {
        let mut o = Obj::default();
        o.ptr_str("holderIdentity", s.holder_identity.take());
        o.ptr_int("leaseDurationSeconds", s.lease_duration_seconds.take());
        o.micro_time("acquireTime", s.acquire_time.take())?;
        o.micro_time("renewTime", s.renew_time.take())?;
        o.ptr_int("leaseTransitions", s.lease_transitions.take());
        o.ptr_str("strategy", s.strategy.take());
        o.ptr_str("preferredHolder", s.preferred_holder.take());
        finish(s, "LeaseSpec")?;
        Ok(o.done())
    })?;
    finish(l, "Lease")?;
    Ok(o.done())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let u = Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            rfc3339(0, None).ok().as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        assert_eq!(
            rfc3339(1_795_505_183, Some(345_719_000)).ok().as_deref(),
            Some("2026-11-24T07:26:23.345719Z")
        );
        assert!(rfc3339(i64::MAX, None).is_err());
        assert!(rfc3339(0, Some(-1)).is_err());
    }

    #[test]
    fn int_or_string_and_tags() {
        let s = IntOrString {
            r#type: Some(1),
            int_val: Some(0),
            str_val: Some("http".into()),
        };
        assert_eq!(int_or_string(s).ok(), Some(json!("http")));
        let i = IntOrString {
            r#type: Some(0),
            int_val: Some(8080),
            str_val: Some(String::new()),
        };
        assert_eq!(int_or_string(i).ok(), Some(json!(8080)));
        let c = core::Container {
            liveness_probe: Some(Default::default()),
            tty: Some(true),
            ..Default::default()
        };
        assert_eq!(field_tags(&c.encode_to_vec()), vec![10, 18]);
    }

    #[test]
    fn unmapped_fields_are_refused_not_dropped() {
        let cm = core::ConfigMap {
            metadata: Some(meta::ObjectMeta {
                name: Some("x".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(decode(&envelope("v1", "ConfigMap", cm.encode_to_vec())).is_ok());
        let c = core::Container {
            name: Some("c".into()),
            liveness_probe: Some(Default::default()),
            ..Default::default()
        };
        let d = apps::Deployment {
            spec: Some(apps::DeploymentSpec {
                template: Some(core::PodTemplateSpec {
                    metadata: None,
                    spec: Some(core::PodSpec {
                        containers: vec![c],
                        ..Default::default()
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let e = decode(&envelope("apps/v1", "Deployment", d.encode_to_vec())).err();
        assert_eq!(e.map(|e| e.code), Some(StatusCode::UNSUPPORTED_MEDIA_TYPE));
    }
}
