#!/usr/bin/python3
"""gen-openapi.py — writes api/openapi/schema.json, the one schema of the
kinds cloudcore's Kubernetes gateway serves (strict field validation,
strategic merge patch metadata, /openapi/v2 and /openapi/v3 for kubectl).

The core v1 and meta v1 shapes come from the model classes of the
python3-kubernetes package (field names and types only); the Device and
DeviceModel shapes (devices.kubeedge.io/v1beta1) are written here by hand.
The output is deterministic (sorted keys), so a regeneration diffs clean.

    /usr/bin/python3 tools/gen-openapi.py [OUT]   (default api/openapi/schema.json)
"""
import json
import os
import re
import sys

try:
    from kubernetes.client import models
except ImportError:
    sys.exit("gen-openapi: python3-kubernetes is missing (apt-get install -y python3-kubernetes)")

CORE = "io.k8s.api.core.v1."
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INTSTR = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
TIME = META + "Time"
DEV = "io.kubeedge.devices.v1beta1."

# The kinds served, by model class: (class, group, version, kind, short description).
ROOTS = [
    ("V1Namespace", "", "v1", "Namespace", "A scope for the names of namespaced objects."),
    ("V1Node", "", "v1", "Node", "An edge node managed by cloudcore."),
    ("V1Pod", "", "v1", "Pod", "A group of containers run on one node."),
    ("V1ConfigMap", "", "v1", "ConfigMap", "Configuration data as string keys and values."),
    ("V1Secret", "", "v1", "Secret", "Sensitive data as base64-encoded values."),
    ("CoreV1Event", "", "v1", "Event", "A report of something that happened to an object."),
    ("V1Service", "", "v1", "Service", "A named set of ports served by pods."),
]
# Meta types also served on their own (no kind of their own but Status).
EXTRA = ["V1Status", "V1DeleteOptions", "V1WatchEvent"]

# Model classes named in the meta/v1 group rather than core/v1.
META_CLASSES = {
    "V1ObjectMeta", "V1ListMeta", "V1OwnerReference", "V1ManagedFieldsEntry", "V1Status",
    "V1StatusDetails", "V1StatusCause", "V1DeleteOptions", "V1Preconditions", "V1WatchEvent",
    "V1LabelSelector", "V1LabelSelectorRequirement", "V1Condition",
}

# Fields holding resource quantities (a string or a number on the wire).
QUANTITY_FIELDS = {"limits", "requests", "capacity", "allocatable", "allocatedResources",
                   "overhead", "sizeLimit", "divisor"}
# "object" fields that are an int or a string (ports by number or name).
INTSTR_FIELDS = {"port", "targetPort"}

# Strategic merge patch facts: (definition, field) -> (strategy, merge key or None).
PATCH = {
    (CORE + "PodSpec", "containers"): ("merge", "name"),
    (CORE + "PodSpec", "initContainers"): ("merge", "name"),
    (CORE + "PodSpec", "ephemeralContainers"): ("merge", "name"),
    (CORE + "PodSpec", "volumes"): ("merge,retainKeys", "name"),
    (CORE + "PodSpec", "imagePullSecrets"): ("merge", "name"),
    (CORE + "Container", "env"): ("merge", "name"),
    (CORE + "Container", "ports"): ("merge", "containerPort"),
    (CORE + "Container", "volumeMounts"): ("merge", "mountPath"),
    (CORE + "Container", "volumeDevices"): ("merge", "devicePath"),
    (CORE + "EphemeralContainer", "env"): ("merge", "name"),
    (CORE + "EphemeralContainer", "ports"): ("merge", "containerPort"),
    (CORE + "EphemeralContainer", "volumeMounts"): ("merge", "mountPath"),
    (CORE + "EphemeralContainer", "volumeDevices"): ("merge", "devicePath"),
    (META + "ObjectMeta", "finalizers"): ("merge", None),
    (META + "ObjectMeta", "ownerReferences"): ("merge", "uid"),
    (CORE + "ServiceSpec", "ports"): ("merge", "port"),
    (CORE + "NodeSpec", "podCIDRs"): ("merge", None),
    (CORE + "NodeStatus", "addresses"): ("merge", "type"),
    (CORE + "NodeStatus", "conditions"): ("merge", "type"),
    (CORE + "PodStatus", "conditions"): ("merge", "type"),
    (DEV + "DeviceSpec", "properties"): ("merge", "name"),
    (DEV + "DeviceStatus", "twins"): ("merge", "propertyName"),
    (DEV + "DeviceModelSpec", "properties"): ("merge", "name"),
}

# Required fields, as Kubernetes marks them (the obvious ones).
REQUIRED = {
    CORE + "Container": ["name"],
    CORE + "EphemeralContainer": ["name"],
    CORE + "PodSpec": ["containers"],
    CORE + "ContainerPort": ["containerPort"],
    CORE + "EnvVar": ["name"],
    CORE + "VolumeMount": ["mountPath", "name"],
    CORE + "Volume": ["name"],
    CORE + "ServicePort": ["port"],
    CORE + "KeyToPath": ["key", "path"],
    CORE + "Toleration": [],
    META + "OwnerReference": ["apiVersion", "kind", "name", "uid"],
}


# Fields newer than the model classes of the packaged python3-kubernetes
# (stable in Kubernetes 1.23 to 1.33), so objects using them still pass:
# definition -> field -> schema; and the definitions they need.
def added_fields():
    s = {"type": "string"}

    def obj(props, required=()):
        d = {"type": "object", "properties": props}
        if required:
            d["required"] = sorted(required)
        return d

    def arr(item, key=None, strategy="merge"):
        d = {"type": "array", "items": item}
        if key:
            d["x-kubernetes-patch-strategy"] = strategy
            d["x-kubernetes-patch-merge-key"] = key
        return d

    defs = {
        CORE + "PodOS": obj({"name": s}, ["name"]),
        CORE + "PodSchedulingGate": obj({"name": s}, ["name"]),
        CORE + "PodResourceClaim": obj({"name": s, "resourceClaimName": s,
                                        "resourceClaimTemplateName": s}, ["name"]),
        CORE + "ContainerResizePolicy": obj({"resourceName": s, "restartPolicy": s},
                                            ["resourceName", "restartPolicy"]),
        CORE + "GRPCAction": obj({"port": {"type": "integer"}, "service": s}, ["port"]),
        CORE + "ResourceClaim": obj({"name": s, "request": s}, ["name"]),
        CORE + "HostIP": obj({"ip": s}),
        CORE + "AppArmorProfile": obj({"type": s, "localhostProfile": s}, ["type"]),
        CORE + "SleepAction": obj({"seconds": {"type": "integer"}}, ["seconds"]),
    }
    container = {"resizePolicy": arr(ref(CORE + "ContainerResizePolicy")), "restartPolicy": s}
    fields = {
        CORE + "PodSpec": {
            "os": ref(CORE + "PodOS"),
            "hostUsers": {"type": "boolean"},
            "schedulingGates": arr(ref(CORE + "PodSchedulingGate"), "name"),
            "resourceClaims": arr(ref(CORE + "PodResourceClaim"), "name", "merge,retainKeys"),
        },
        CORE + "Container": container,
        CORE + "EphemeralContainer": container,
        CORE + "Probe": {"grpc": ref(CORE + "GRPCAction")},
        CORE + "ResourceRequirements": {"claims": arr(ref(CORE + "ResourceClaim"))},
        CORE + "PodStatus": {"hostIPs": arr(ref(CORE + "HostIP"), "ip"), "resize": s},
        CORE + "ContainerStatus": {
            "allocatedResources": {"type": "object", "additionalProperties": ref(QUANTITY)},
            "resources": ref(CORE + "ResourceRequirements"),
        },
        CORE + "ServiceSpec": {"trafficDistribution": s},
        CORE + "PodSecurityContext": {"appArmorProfile": ref(CORE + "AppArmorProfile"),
                                      "supplementalGroupsPolicy": s, "seLinuxChangePolicy": s},
        CORE + "SecurityContext": {"appArmorProfile": ref(CORE + "AppArmorProfile")},
        CORE + "Handler": {"sleep": ref(CORE + "SleepAction")},
    }
    return fields, defs


def def_name(cls):
    if cls in META_CLASSES:
        return META + cls[2:]
    if cls.startswith("CoreV1"):
        return CORE + cls[6:]
    if cls.startswith("V1"):
        return CORE + cls[2:]
    raise SystemExit("gen-openapi: no definition name for model class " + cls)


def ref(name):
    return {"$ref": "#/definitions/" + name}


def free_object():
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def type_schema(t, field, todo):
    """The schema of one model type text ('list[V1Container]', 'str', ...)."""
    m = re.fullmatch(r"list\[(.+)\]", t)
    if m:
        return {"type": "array", "items": type_schema(m.group(1), field, todo)}
    m = re.fullmatch(r"dict\(str, (.+)\)", t)
    if m:
        return {"type": "object", "additionalProperties": type_schema(m.group(1), field, todo)}
    if field in QUANTITY_FIELDS and t == "str":
        return ref(QUANTITY)
    if t == "str":
        return {"type": "string"}
    if t == "int":
        return {"type": "integer"}
    if t == "float":
        return {"type": "number"}
    if t == "bool":
        return {"type": "boolean"}
    if t == "datetime":
        return ref(TIME)
    if t == "object":
        if field in INTSTR_FIELDS:
            return ref(INTSTR)
        return free_object()
    if re.fullmatch(r"(V1|CoreV1)\w+", t):
        todo.append(t)
        return ref(def_name(t))
    raise SystemExit("gen-openapi: unknown model type %r (field %s)" % (t, field))


def gvk(group, version, kind):
    return [{"group": group, "kind": kind, "version": version}]


def model_definitions():
    defs = {}
    todo = [r[0] for r in ROOTS] + [r[0] + "List" for r in ROOTS] + list(EXTRA)
    seen = set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        c = getattr(models, cls, None)
        if c is None:
            if cls == "V1WatchEvent":
                continue
            raise SystemExit("gen-openapi: python3-kubernetes has no model " + cls)
        name = def_name(cls)
        props = {}
        for py, t in c.openapi_types.items():
            field = c.attribute_map[py]
            props[field] = type_schema(t, field, todo)
            pm = PATCH.get((name, field))
            if pm:
                props[field]["x-kubernetes-patch-strategy"] = pm[0]
                if pm[1]:
                    props[field]["x-kubernetes-patch-merge-key"] = pm[1]
        d = {"type": "object", "properties": props}
        if REQUIRED.get(name):
            d["required"] = sorted(REQUIRED[name])
        defs[name] = d
    return defs


def device_definitions():
    s = {"type": "string"}
    i = {"type": "integer"}
    b = {"type": "boolean"}
    twin_value = {"type": "object", "properties": {
        "value": s,
        "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }}
    protocol = {"type": "object", "properties": {"protocolName": s, "configData": free_object()}}
    defs = {
        DEV + "Device": {"type": "object", "description": "A device attached to an edge node.",
                         "properties": {
                             "apiVersion": s, "kind": s, "metadata": ref(META + "ObjectMeta"),
                             "spec": ref(DEV + "DeviceSpec"), "status": ref(DEV + "DeviceStatus")}},
        DEV + "DeviceSpec": {"type": "object", "properties": {
            "deviceModelRef": {"type": "object", "properties": {"name": s}},
            "nodeName": s,
            "protocol": ref(DEV + "ProtocolConfig"),
            "properties": {"type": "array", "items": ref(DEV + "DeviceProperty")},
        }},
        DEV + "ProtocolConfig": protocol,
        DEV + "DeviceProperty": {"type": "object", "required": ["name"], "properties": {
            "name": s,
            "desired": ref(DEV + "TwinProperty"),
            "visitors": ref(DEV + "ProtocolConfig"),
            "reportCycle": i,
            "collectCycle": i,
            "reportToCloud": b,
            "pushMethod": free_object(),
        }},
        DEV + "TwinProperty": twin_value,
        DEV + "DeviceStatus": {"type": "object", "properties": {
            "twins": {"type": "array", "items": ref(DEV + "Twin")},
            "state": s,
            "lastOnlineTime": s,
        }},
        DEV + "Twin": {"type": "object", "required": ["propertyName"], "properties": {
            "propertyName": s,
            "reported": ref(DEV + "TwinProperty"),
            "observedDesired": ref(DEV + "TwinProperty"),
        }},
        DEV + "DeviceModel": {"type": "object", "description": "The properties devices of one model have.",
                              "properties": {
                                  "apiVersion": s, "kind": s, "metadata": ref(META + "ObjectMeta"),
                                  "spec": ref(DEV + "DeviceModelSpec")}},
        DEV + "DeviceModelSpec": {"type": "object", "properties": {
            "protocol": s,
            "properties": {"type": "array", "items": ref(DEV + "ModelProperty")},
        }},
        # minimum and maximum: a number, or a string holding one (no type).
        DEV + "ModelProperty": {"type": "object", "required": ["name"], "properties": {
            "name": s, "description": s, "type": s, "accessMode": s,
            "minimum": {"description": "A number, or a string holding one."},
            "maximum": {"description": "A number, or a string holding one."}, "unit": s,
        }},
    }
    for kind in ("Device", "DeviceModel"):
        defs[DEV + kind + "List"] = {"type": "object", "required": ["items"], "properties": {
            "apiVersion": s, "kind": s, "metadata": ref(META + "ListMeta"),
            "items": {"type": "array", "items": ref(DEV + kind)}}}
    return defs


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "api", "openapi", "schema.json")
    defs = model_definitions()
    defs.update(device_definitions())
    fields, extra = added_fields()
    for name, d in extra.items():
        defs.setdefault(name, d)
    for name, props in fields.items():
        if name not in defs:
            raise SystemExit("gen-openapi: no definition %s for the added fields" % name)
        for field, schema in props.items():
            defs[name]["properties"].setdefault(field, schema)
    for (name, field), (strategy, key) in PATCH.items():
        if name.startswith(DEV):  # hand-written: set here
            prop = defs[name]["properties"][field]
            prop["x-kubernetes-patch-strategy"] = strategy
            if key:
                prop["x-kubernetes-patch-merge-key"] = key
        elif defs.get(name, {}).get("properties", {}).get(field, {}).get(
                "x-kubernetes-patch-strategy") != strategy:
            raise SystemExit("gen-openapi: patch fact for %s.%s matched no field" % (name, field))
    defs[QUANTITY] = {"type": "string"}
    defs[INTSTR] = {"type": "string", "format": "int-or-string"}
    defs[TIME] = {"type": "string", "format": "date-time"}
    kinds = [(def_name(c), g, v, k, d) for c, g, v, k, d in ROOTS]
    kinds += [(DEV + "Device", "devices.kubeedge.io", "v1beta1", "Device", None),
              (DEV + "DeviceModel", "devices.kubeedge.io", "v1beta1", "DeviceModel", None)]
    for name, g, v, k, desc in kinds:
        defs[name]["x-kubernetes-group-version-kind"] = gvk(g, v, k)
        if desc:
            defs[name]["description"] = desc
        defs[name + "List"]["x-kubernetes-group-version-kind"] = gvk(g, v, k + "List")
    for k in ("Status", "DeleteOptions", "WatchEvent"):
        if META + k in defs:
            defs[META + k]["x-kubernetes-group-version-kind"] = gvk("", "v1", k)
    # A free-form object has no properties of its own to list.
    for d in defs.values():
        if d.get("type") == "object" and d.get("properties") == {}:
            del d["properties"]
            d["x-kubernetes-preserve-unknown-fields"] = True
    text = json.dumps({"definitions": defs}, sort_keys=True, indent=1) + "\n"
    with open(out, "w") as f:
        f.write(text)
    print("gen-openapi: %d definitions, %d bytes -> %s" % (len(defs), len(text), out))


if __name__ == "__main__":
    main()
