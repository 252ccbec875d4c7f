//! Strategic merge patch (`application/strategic-merge-patch+json`) for the built-in
//! kinds, following kube-apiserver's `strategicpatch` package (server side:
//! `MergeParallelList` and `IgnoreUnmatchedNulls` on).
//!
//! - Maps merge recursively; `null` deletes a key.
//! - Lists with a patch merge key merge element-wise by that key; lists with the
//!   `merge` strategy and no key (`finalizers`) merge as sets; every other list is
//!   replaced. Which is which comes from the kind and the field path ([`field`]).
//! - Element order is kube's: `$setElementOrder/<f>` first, then the order of the
//!   patch list, then the order of the live list (so, as in kube, an element the
//!   patch adds without `$setElementOrder` lands before the live elements).
//! - Directives: `$patch: delete|replace` (maps and list elements),
//!   `$deleteFromPrimitiveList/<f>`, `$setElementOrder/<f>`, `$retainKeys`. None is
//!   ever stored; an unknown `$` key is an error.
//!
//! Unlike kube, values the patch brings in whole (a new key, a new list element) are
//! merged into an empty value, so the directives they carry are applied, not stored.

use serde_json::{Map, Value};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";
const ORDER: &str = "$setElementOrder/";

type Res<T> = Result<T, String>;

/// The schema type of a map, as far as patch strategies go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ty {
    Root,
    Meta,
    WorkloadSpec,
    PodTemplate,
    PodSpec,
    Container,
    PodStatus,
    NodeSpec,
    NodeStatus,
    ServiceSpec,
    Status,
    Other,
}

/// How a list field merges.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ListKind {
    Replace,
    /// `patchStrategy:"merge"` on a list of scalars.
    Set,
    /// `patchStrategy:"merge"` with `patchMergeKey`.
    Keyed(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Directive {
    Delete,
    Replace,
}

/// Applies the strategic merge patch `patch` to `original`, an object of kind `kind`.
pub fn apply(original: &mut Value, patch: &Value, kind: &str) -> Result<(), String> {
    let Value::Object(p) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let Value::Object(o) = original else {
        return Err("the object to patch is not a JSON object".into());
    };
    let cx = Cx { kind };
    match directive(p)? {
        Some(Directive::Delete) => {
            Err("\"$patch\": \"delete\" cannot delete the whole object".into())
        }
        Some(Directive::Replace) => {
            let mut m = Map::new();
            cx.merge_map(&mut m, p, Ty::Root)?;
            *o = m;
            Ok(())
        }
        None => cx.merge_map(o, p, Ty::Root),
    }
}

/// The type of field `name` of a map of type `ty` (for a list: of its elements), and
/// how it merges when it is a list.
fn field(kind: &str, ty: Ty, name: &str) -> (Ty, ListKind) {
    use ListKind::{Keyed, Replace, Set};
    match (ty, name) {
        (Ty::Root | Ty::PodTemplate, "metadata") => (Ty::Meta, Replace),
        (Ty::Root, "spec") => match kind {
            "Pod" => (Ty::PodSpec, Replace),
            "Deployment"
            | "ReplicaSet"
            | "StatefulSet"
            | "DaemonSet"
            | "Job"
            | "ReplicationController" => (Ty::WorkloadSpec, Replace),
            "Service" => (Ty::ServiceSpec, Replace),
            "Node" => (Ty::NodeSpec, Replace),
            _ => (Ty::Other, Replace),
        },
        (Ty::Root, "status") => match kind {
            "Pod" => (Ty::PodStatus, Replace),
            "Node" => (Ty::NodeStatus, Replace),
            _ => (Ty::Status, Replace),
        },
        (Ty::Root, "secrets") if kind == "ServiceAccount" => (Ty::Other, Keyed("name")),
        (Ty::WorkloadSpec, "template") => (Ty::PodTemplate, Replace),
        (Ty::PodTemplate, "spec") => (Ty::PodSpec, Replace),
        (Ty::Meta, "ownerReferences") => (Ty::Other, Keyed("uid")),
        (Ty::Meta, "finalizers") => (Ty::Other, Set),
        (Ty::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            (Ty::Container, Keyed("name"))
        }
        (Ty::PodSpec, "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates") => {
            (Ty::Other, Keyed("name"))
        }
        (Ty::PodSpec, "hostAliases") => (Ty::Other, Keyed("ip")),
        (Ty::PodSpec, "topologySpreadConstraints") => (Ty::Other, Keyed("topologyKey")),
        (Ty::Container, "env") => (Ty::Other, Keyed("name")),
        (Ty::Container, "ports") => (Ty::Other, Keyed("containerPort")),
        (Ty::Container, "volumeMounts") => (Ty::Other, Keyed("mountPath")),
        (Ty::Container, "volumeDevices") => (Ty::Other, Keyed("devicePath")),
        (Ty::PodStatus | Ty::NodeStatus | Ty::Status, "conditions") => (Ty::Other, Keyed("type")),
        (Ty::PodStatus, "podIPs" | "hostIPs") => (Ty::Other, Keyed("ip")),
        (Ty::NodeStatus, "addresses") => (Ty::Other, Keyed("type")),
        (Ty::NodeSpec, "podCIDRs") => (Ty::Other, Set),
        (Ty::ServiceSpec, "ports") => (Ty::Other, Keyed("port")),
        _ => (Ty::Other, Replace),
    }
}

/// The `$patch` directive of a patch map, if any.
fn directive(p: &Map<String, Value>) -> Res<Option<Directive>> {
    match p.get(PATCH) {
        None => Ok(None),
        Some(Value::String(s)) if s == "delete" => Ok(Some(Directive::Delete)),
        Some(Value::String(s)) if s == "replace" => Ok(Some(Directive::Replace)),
        Some(v) => Err(format!("invalid value for \"$patch\": {v}")),
    }
}

/// JSON equality, with numbers compared by value (`80` = `80.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(p), Some(q)) if p == q)
        }
        _ => a == b,
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Object(_) | Value::Array(_))
}

/// The merge-key value of a list element.
fn key_of<'v>(v: &'v Value, key: &str) -> Res<&'v Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .ok_or_else(|| format!("map {v} does not contain declared merge key: {key}")),
        _ => Err(format!(
            "list element {v} is not an object (merge key: {key})"
        )),
    }
}

/// Where `item` sits in `list` (by merge key, or by value for a set).
fn index_in(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    match key {
        None => list.iter().position(|v| same(v, item)),
        Some(k) => {
            let want = item.get(k)?;
            list.iter()
                .position(|v| v.get(k).is_some_and(|got| same(got, want)))
        }
    }
}

fn sort_by_order(items: &mut [Value], order: &[Value], key: Option<&str>) {
    items.sort_by_key(|v| index_in(order, v, key).unwrap_or(usize::MAX));
}

/// kube's `normalizeElementOrder`: `patch_items` sorted by `patch_order`,
/// `server_only` by `server_order`, then interleaved by their live positions; an
/// item that is not live goes before the remaining live items.
fn normalize(
    mut patch_items: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    sort_by_order(&mut patch_items, patch_order, key);
    sort_by_order(&mut server_only, server_order, key);
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (index_in(server_order, l, key), index_in(server_order, r, key)),
                (Some(li), Some(ri)) if li < ri
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// Splits `merged` into the items present in `by` and the others.
fn partition(merged: Vec<Value>, by: &[Value], key: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    merged
        .into_iter()
        .partition(|v| index_in(by, v, key).is_some())
}

/// A merge key that a `$setElementOrder` list implies when the schema has none
/// (every element is `{key: value}` with the same key), or `Set` for scalars.
fn inferred_kind(order: &[Value]) -> ListKind {
    if order.iter().all(is_scalar) {
        return ListKind::Set;
    }
    let mut found: Option<&str> = None;
    for v in order {
        match v {
            Value::Object(m) if m.len() == 1 => {
                let k = m.keys().next().map(String::as_str);
                if found.is_some() && found != k {
                    return ListKind::Replace;
                }
                found = k;
            }
            _ => return ListKind::Replace,
        }
    }
    // Merge keys of the built-in kinds; a key outside them keeps the list replaced.
    match found {
        Some("name") => ListKind::Keyed("name"),
        Some("type") => ListKind::Keyed("type"),
        Some("uid") => ListKind::Keyed("uid"),
        Some("ip") => ListKind::Keyed("ip"),
        Some("port") => ListKind::Keyed("port"),
        Some("containerPort") => ListKind::Keyed("containerPort"),
        Some("mountPath") => ListKind::Keyed("mountPath"),
        Some("devicePath") => ListKind::Keyed("devicePath"),
        Some("topologyKey") => ListKind::Keyed("topologyKey"),
        _ => ListKind::Replace,
    }
}

fn list_of<'v>(v: &'v Value, what: &str) -> Res<&'v Vec<Value>> {
    v.as_array()
        .ok_or_else(|| format!("{what} must be a list, got {v}"))
}

struct Cx<'a> {
    kind: &'a str,
}

impl Cx<'_> {
    /// Merges patch map `p` into `o` (a map of type `ty`). `p`'s own `$patch` has
    /// been handled by the caller.
    fn merge_map(&self, o: &mut Map<String, Value>, p: &Map<String, Value>, ty: Ty) -> Res<()> {
        if let Some(retain) = p.get(RETAIN_KEYS) {
            let retain = list_of(retain, "$retainKeys")?;
            let mut keep = Vec::with_capacity(retain.len());
            for k in retain {
                keep.push(
                    k.as_str()
                        .ok_or_else(|| format!("$retainKeys must list strings, got {k}"))?,
                );
            }
            for (k, v) in p {
                if v.is_null() || k.starts_with('$') {
                    continue;
                }
                if !keep.contains(&k.as_str()) {
                    return Err(format!(
                        "the patch has field {k:?}, which is not in its $retainKeys list"
                    ));
                }
            }
            o.retain(|k, _| keep.contains(&k.as_str()));
        }

        // `$setElementOrder/<f>` merges <f> with it, as kube does, before anything else.
        let mut ordered: Vec<&str> = Vec::new();
        for (k, order) in p {
            let Some(f) = k.strip_prefix(ORDER) else {
                continue;
            };
            if f.is_empty() {
                return Err(format!("invalid directive {k:?}"));
            }
            let order = list_of(order, k)?;
            self.set_element_order(o, p, ty, f, order)?;
            ordered.push(f);
        }

        let mut deletes = Vec::new();
        for (k, v) in p {
            if let Some(rest) = k.strip_prefix('$') {
                if k == PATCH || k == RETAIN_KEYS || k.starts_with(ORDER) {
                    continue;
                }
                match k.strip_prefix(DELETE_FROM) {
                    Some(f) if !f.is_empty() => deletes.push((f, list_of(v, k)?)),
                    _ => return Err(format!("unknown patch directive \"${rest}\"")),
                }
                continue;
            }
            if ordered.contains(&k.as_str()) {
                continue;
            }
            self.merge_field(o, k, v, ty)?;
        }

        for (f, values) in deletes {
            if let Some(cur) = o.get_mut(f) {
                let Value::Array(cur) = cur else {
                    return Err(format!("$deleteFromPrimitiveList/{f}: {f} is not a list"));
                };
                if let Some(bad) = values.iter().find(|v| !is_scalar(v)) {
                    return Err(format!(
                        "$deleteFromPrimitiveList/{f} must list scalars, got {bad}"
                    ));
                }
                cur.retain(|v| !values.iter().any(|d| same(d, v)));
            }
        }
        Ok(())
    }

    /// kube's `mergePatchIntoOriginal` for one `$setElementOrder/<f>` list.
    fn set_element_order(
        &self,
        o: &mut Map<String, Value>,
        p: &Map<String, Value>,
        ty: Ty,
        f: &str,
        order: &[Value],
    ) -> Res<()> {
        let (elem_ty, mut lk) = field(self.kind, ty, f);
        if lk == ListKind::Replace {
            lk = inferred_kind(order);
        }
        let key = match lk {
            ListKind::Keyed(k) => Some(k),
            _ => None,
        };
        let patch_list = p.get(f).map(|v| list_of(v, f)).transpose()?;
        if let Some(k) = key {
            for v in order {
                key_of(v, k)?;
            }
        } else if let Some(bad) = order.iter().find(|v| !is_scalar(v)) {
            return Err(format!("$setElementOrder/{f}: unexpected element {bad}"));
        }
        if let Some(pl) = patch_list {
            validate_order(pl, order, key, f)?;
        }
        let original = match o.get_mut(f) {
            Some(Value::Array(a)) => Some(std::mem::take(a)),
            Some(Value::Null) | None => None,
            Some(v) => return Err(format!("{f} is not a list: {v}")),
        };
        let server_order = original.clone().unwrap_or_default();
        let merged = match (original, patch_list) {
            (None, None) => return Ok(()),
            (Some(orig), None) => orig,
            (orig, Some(pl)) => self.merge_list(orig.unwrap_or_default(), pl, elem_ty, lk)?,
        };
        let (patch_items, server_only) = partition(merged, order, key);
        let both = normalize(patch_items, server_only, order, &server_order, key);
        o.insert(f.to_string(), Value::Array(both));
        Ok(())
    }

    /// Merges the patch value `v` of field `k` into map `o` of type `ty`.
    fn merge_field(&self, o: &mut Map<String, Value>, k: &str, v: &Value, ty: Ty) -> Res<()> {
        let (child, lk) = field(self.kind, ty, k);
        match v {
            Value::Null => {
                o.remove(k);
            }
            Value::Object(pm) => match directive(pm)? {
                Some(Directive::Delete) => {
                    o.remove(k);
                }
                Some(Directive::Replace) => {
                    let mut m = Map::new();
                    self.merge_map(&mut m, pm, child)?;
                    o.insert(k.to_string(), Value::Object(m));
                }
                None => {
                    if let Some(Value::Object(om)) = o.get_mut(k) {
                        self.merge_map(om, pm, child)?;
                    } else {
                        let mut m = Map::new();
                        self.merge_map(&mut m, pm, child)?;
                        o.insert(k.to_string(), Value::Object(m));
                    }
                }
            },
            Value::Array(pl) => {
                let orig = match o.get_mut(k) {
                    Some(Value::Array(a)) => std::mem::take(a),
                    _ => Vec::new(),
                };
                let merged = self.merge_list(orig, pl, child, lk)?;
                o.insert(k.to_string(), Value::Array(merged));
            }
            scalar => {
                o.insert(k.to_string(), scalar.clone());
            }
        }
        Ok(())
    }

    /// A value the patch brings in whole, with its directives applied.
    fn fresh_map(&self, pm: &Map<String, Value>, ty: Ty) -> Res<Map<String, Value>> {
        let mut m = Map::new();
        self.merge_map(&mut m, pm, ty)?;
        Ok(m)
    }

    fn merge_list(
        &self,
        orig: Vec<Value>,
        pl: &[Value],
        elem: Ty,
        lk: ListKind,
    ) -> Res<Vec<Value>> {
        match lk {
            ListKind::Replace => self.replace_list(pl, elem),
            ListKind::Set => merge_set(orig, pl),
            ListKind::Keyed(key) => self.merge_keyed(orig, pl, elem, key),
        }
    }

    fn replace_list(&self, pl: &[Value], elem: Ty) -> Res<Vec<Value>> {
        let mut out = Vec::with_capacity(pl.len());
        for v in pl {
            match v {
                Value::Object(m) if m.contains_key(PATCH) => {
                    // Only `{"$patch": "replace"}` makes sense in a list without a
                    // merge key: it is the default.
                    if m.len() == 1 && directive(m)? == Some(Directive::Replace) {
                        continue;
                    }
                    return Err(format!(
                        "{v}: \"$patch\" in the element of a list that has no merge key"
                    ));
                }
                Value::Object(m) => out.push(Value::Object(self.fresh_map(m, elem)?)),
                other => out.push(other.clone()),
            }
        }
        Ok(out)
    }

    fn merge_keyed(
        &self,
        mut orig: Vec<Value>,
        pl: &[Value],
        elem: Ty,
        key: &'static str,
    ) -> Res<Vec<Value>> {
        if orig.is_empty() && pl.is_empty() {
            return Ok(orig);
        }
        if let Some(bad) = orig.iter().chain(pl).find(|v| !v.is_object()) {
            return Err(format!(
                "list element {bad} is not an object (merge key: {key})"
            ));
        }
        // Special elements first: `$patch: delete|replace`.
        let mut plain: Vec<&Map<String, Value>> = Vec::with_capacity(pl.len());
        let mut replace = false;
        for v in pl {
            let Value::Object(m) = v else { continue };
            match m.get(PATCH) {
                None => plain.push(m),
                Some(Value::String(s)) if s == "delete" => {
                    let want = key_of(v, key)?;
                    orig.retain(|o| !o.get(key).is_some_and(|got| same(got, want)));
                }
                Some(Value::String(s)) if s == "replace" => replace = true,
                Some(Value::String(s)) if s == "merge" => {
                    return Err("merging lists cannot yet be specified in the patch".into())
                }
                Some(d) => return Err(format!("invalid value for \"$patch\": {d}")),
            }
        }
        if replace {
            let mut out = Vec::with_capacity(plain.len());
            for m in plain {
                let v = Value::Object(self.fresh_map(m, elem)?);
                key_of(&v, key)?;
                out.push(v);
            }
            return Ok(out);
        }
        let server_order = orig.clone();
        let mut patch_order = Vec::with_capacity(plain.len());
        for m in plain {
            let want = m
                .get(key)
                .ok_or_else(|| {
                    format!(
                        "map {} does not contain declared merge key: {key}",
                        Value::Object(m.clone())
                    )
                })?
                .clone();
            let found = orig
                .iter_mut()
                .find(|o| o.get(key).is_some_and(|got| same(got, &want)));
            match found {
                Some(Value::Object(om)) => self.merge_map(om, m, elem)?,
                _ => orig.push(Value::Object(self.fresh_map(m, elem)?)),
            }
            let mut k = Map::new();
            k.insert(key.to_string(), want);
            patch_order.push(Value::Object(k));
        }
        for v in &orig {
            key_of(v, key)?;
        }
        let (patch_items, server_only) = partition(orig, &patch_order, Some(key));
        Ok(normalize(
            patch_items,
            server_only,
            &patch_order,
            &server_order,
            Some(key),
        ))
    }
}

/// A `merge` list of scalars: the union, in kube's order.
fn merge_set(orig: Vec<Value>, pl: &[Value]) -> Res<Vec<Value>> {
    if let Some(bad) = orig.iter().chain(pl).find(|v| !is_scalar(v)) {
        return Err(format!("{bad}: expected a list of scalars"));
    }
    let server_order = orig.clone();
    let mut merged: Vec<Value> = Vec::with_capacity(orig.len() + pl.len());
    for v in orig.into_iter().chain(pl.iter().cloned()) {
        if !merged.iter().any(|m| same(m, &v)) {
            merged.push(v);
        }
    }
    let (patch_items, server_only) = partition(merged, pl, None);
    Ok(normalize(patch_items, server_only, pl, &server_order, None))
}

/// kube's `validatePatchWithSetOrderList`: the patch list's items (deletions aside)
/// appear in `$setElementOrder`, in the same relative order.
fn validate_order(pl: &[Value], order: &[Value], key: Option<&str>, f: &str) -> Res<()> {
    let items: Vec<&Value> = pl
        .iter()
        .filter(|v| !v.as_object().is_some_and(|m| m.contains_key(PATCH)))
        .collect();
    let mut oi = order.iter();
    'items: for item in items {
        for o in oi.by_ref() {
            let equal = match key {
                Some(k) => same(key_of(item, k)?, key_of(o, k)?),
                None => same(item, o),
            };
            if equal {
                continue 'items;
            }
        }
        return Err(format!(
            "the order in patch list {} doesn't match the $setElementOrder/{f} list",
            Value::Array(pl.to_vec())
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, mut orig: Value, patch: Value) -> Value {
        apply(&mut orig, &patch, kind).unwrap();
        orig
    }

    fn err(kind: &str, mut orig: Value, patch: Value) -> String {
        apply(&mut orig, &patch, kind).unwrap_err()
    }

    fn no_dollar(v: &Value) -> bool {
        match v {
            Value::Object(m) => m.iter().all(|(k, v)| !k.starts_with('$') && no_dollar(v)),
            Value::Array(a) => a.iter().all(no_dollar),
            _ => true,
        }
    }

    fn pod(containers: Value) -> Value {
        json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
    }

    #[test]
    fn maps_merge_and_null_deletes() {
        let v = smp(
            "ConfigMap",
            json!({"data": {"a": "1", "b": "2"}, "metadata": {"labels": {"x": "y"}}}),
            json!({"data": {"a": null, "c": "3"}, "metadata": {"labels": {"z": "w"}}}),
        );
        assert_eq!(
            v,
            json!({"data": {"b": "2", "c": "3"}, "metadata": {"labels": {"x": "y", "z": "w"}}})
        );
    }

    #[test]
    fn unkeyed_lists_are_replaced() {
        let v = smp(
            "Pod",
            pod(json!([{"name": "a", "args": ["x", "y"]}])),
            json!({"spec": {"containers": [{"name": "a", "args": ["z"]}], "tolerations": [{"key": "k"}]}}),
        );
        assert_eq!(v["spec"]["containers"][0]["args"], json!(["z"]));
        assert_eq!(v["spec"]["tolerations"], json!([{"key": "k"}]));
    }

    #[test]
    fn keyed_lists_merge_by_key_and_new_items_go_first_as_in_kube() {
        let v = smp(
            "Pod",
            pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])),
            json!({"spec": {"containers": [{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}]}}),
        );
        assert_eq!(
            v["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
        );
        let v = smp(
            "Pod",
            pod(json!([{"name": "a"}, {"name": "b"}])),
            json!({"spec": {"containers": [{"name": "c"}]}}),
        );
        assert_eq!(
            v["spec"]["containers"],
            json!([{"name": "c"}, {"name": "a"}, {"name": "b"}])
        );
    }

    #[test]
    fn container_fields_merge_by_their_keys() {
        let v = smp(
            "Deployment",
            json!({"spec": {"template": {"spec": {"containers": [{
                "name": "a",
                "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                "ports": [{"containerPort": 80, "name": "http"}],
                "volumeMounts": [{"mountPath": "/a", "name": "v"}],
            }]}}}}),
            json!({"spec": {"template": {"spec": {"containers": [{
                "name": "a",
                "env": [{"name": "Y", "value": "3"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}],
                "volumeMounts": [{"mountPath": "/a", "$patch": "delete"}],
            }]}}}}),
        );
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["env"],
            json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "3"}])
        );
        assert_eq!(
            c["ports"][0],
            json!({"containerPort": 80, "name": "http", "protocol": "TCP"})
        );
        assert_eq!(c["ports"][1], json!({"containerPort": 443}));
        assert_eq!(c["volumeMounts"], json!([]));
    }

    #[test]
    fn set_element_order_reorders_and_keeps_unlisted_items() {
        let orig = pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
        let v = smp(
            "Pod",
            orig.clone(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                            "containers": [{"name": "a", "image": "a:2"}]}}),
        );
        assert_eq!(
            v["spec"]["containers"],
            json!([{"name": "b", "image": "b:1"}, {"name": "a", "image": "a:2"}])
        );
        let v = smp(
            "Pod",
            orig,
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}],
                            "containers": [{"name": "a", "image": "a:2"}]}}),
        );
        assert_eq!(
            v["spec"]["containers"],
            json!([{"name": "a", "image": "a:2"}, {"name": "b", "image": "b:1"}])
        );
        assert!(no_dollar(&v));
    }

    #[test]
    fn finalizers_are_a_set_with_a_deletion_list() {
        let orig = json!({"metadata": {"finalizers": ["a", "b"]}});
        let v = smp(
            "ConfigMap",
            orig.clone(),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
        assert_eq!(v["metadata"]["finalizers"], json!(["a", "b", "c"]));
        let v = smp(
            "ConfigMap",
            orig,
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "$setElementOrder/finalizers": ["b"]}}),
        );
        assert_eq!(v["metadata"]["finalizers"], json!(["b"]));
        assert!(no_dollar(&v));
    }

    #[test]
    fn patch_directives_on_maps_and_lists() {
        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}],
                                    "securityContext": {"runAsUser": 1, "fsGroup": 2}}});
        let v = smp(
            "Pod",
            orig.clone(),
            json!({"spec": {"securityContext": {"$patch": "replace", "runAsGroup": 3}}}),
        );
        assert_eq!(v["spec"]["securityContext"], json!({"runAsGroup": 3}));
        let v = smp(
            "Pod",
            orig.clone(),
            json!({"spec": {"securityContext": {"$patch": "delete"}}}),
        );
        assert!(v["spec"].get("securityContext").is_none());
        let v = smp(
            "Pod",
            orig,
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z"}]}}),
        );
        assert_eq!(v["spec"]["containers"], json!([{"name": "z"}]));
    }

    #[test]
    fn retain_keys_drops_unlisted_fields() {
        let v = smp(
            "Deployment",
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(v["spec"]["strategy"], json!({"type": "Recreate"}));
        let e = err(
            "Deployment",
            json!({"spec": {}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
        );
        assert!(e.contains("retainKeys"), "{e}");
    }

    #[test]
    fn conditions_owner_references_and_service_ports() {
        let v = smp(
            "Service",
            json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "x"}]},
                   "spec": {"ports": [{"port": 80, "targetPort": 8080}]},
                   "status": {"conditions": [{"type": "A", "status": "True"}]}}),
            json!({"metadata": {"ownerReferences": [{"uid": "1", "controller": true}]},
                   "spec": {"ports": [{"port": 80, "name": "http"}]},
                   "status": {"conditions": [{"type": "A", "status": "False"}]}}),
        );
        assert_eq!(
            v["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "x", "controller": true}])
        );
        assert_eq!(
            v["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "name": "http"}])
        );
        assert_eq!(
            v["status"]["conditions"],
            json!([{"type": "A", "status": "False"}])
        );
    }

    #[test]
    fn new_values_have_their_directives_applied_not_stored() {
        let v = smp(
            "Pod",
            json!({"spec": {}}),
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "$patch": "delete"}],
                                             "$setElementOrder/env": [{"name": "X"}]}],
                            "affinity": {"$retainKeys": ["nodeAffinity"], "nodeAffinity": {}}}}),
        );
        assert!(no_dollar(&v), "{v}");
        assert_eq!(v["spec"]["containers"][0]["env"], json!([]));
    }

    #[test]
    fn malformed_patches_are_errors() {
        let o = pod(json!([{"name": "a"}]));
        for p in [
            json!([1]),
            json!({"$patch": "delete"}),
            json!({"spec": {"$patch": 3}}),
            json!({"spec": {"$patch": "merge"}}),
            json!({"spec": {"$retainKeys": "containers"}}),
            json!({"spec": {"$setElementOrder/containers": {"name": "a"}}}),
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}], "containers": [{"name": "a"}]}}),
            json!({"spec": {"$deleteFromPrimitiveList/x": "a"}}),
            json!({"spec": {"$bogus": 1}}),
            json!({"spec": {"containers": [{"image": "no-name"}]}}),
            json!({"spec": {"containers": ["a"]}}),
            json!({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}),
            json!({"metadata": {"finalizers": [{"a": 1}]}}),
            json!({"spec": {"tolerations": [{"key": "k", "$patch": "delete"}]}}),
        ] {
            let mut v = o.clone();
            assert!(apply(&mut v, &p, "Pod").is_err(), "{p} should fail");
        }
    }
}
