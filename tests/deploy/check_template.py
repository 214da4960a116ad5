#!/usr/bin/env python3
"""Deployability of template.yaml, checked without an AWS account.

What CloudFormation and IAM would do with the template, as far as it can be
known offline:

1. The template is translated by the SAM translator pinned in
   requirements-dev.txt (what `sam deploy` sends CloudFormation is this
   translation).
2. Every Ref, Fn::GetAtt, ${} of a Fn::Sub and Fn::If condition resolves to
   a parameter, a resource (with an attribute), a pseudo parameter or a
   condition, and the resources' references make no cycle (CloudFormation
   refuses a template with either).
3. The HTTP API's CORS configuration keeps its origins, methods and headers,
   and lets a browser send Idempotency-Key and read Retry-After.
4. With --calls (the file the functions write under AWS_CALL_LOG while the
   end-to-end tests run, shared/src/call_log.rs): every DynamoDB action a
   function was seen to need is allowed by that function's translated role
   on that table or index; every secret its environment names
   (<NAME>_ARN, read at cold start by shared/src/secrets.rs) is readable;
   a DynamoDB event source has what Lambda's poller needs. Then every
   action a role allows that no test used is listed, and fails the check
   unless UNUSED_BUT_NEEDED below says why it stays.

--self-test puts each known defect back into the template (the dependency
cycle, the CORS reference the translator breaks, a stream function that
cannot write, the version moves of a regenerate and a switch denied) and
fails unless the check then fails for it.
"""

import argparse
import copy
import fnmatch
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PSEUDO = {
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::Partition": "aws",
    "AWS::StackName": "chat",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/chat/1",
    "AWS::NotificationARNs": [],
    "AWS::NoValue": None,
}

# AWS managed policies SAM attaches (their documents as AWS publishes them
# in the managed policy reference): logs for every function, the stream
# reads Lambda's event source mapping makes for a DynamoDB event.
MANAGED = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole": [
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"},
    ],
    "arn:aws:iam::aws:policy/service-role/AWSLambdaDynamoDBExecutionRole": [
        {
            "Effect": "Allow",
            "Action": ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"],
            "Resource": "*",
        },
        {"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"},
    ],
}

# What a role allows that no recorded call used, and why it stays. Keyed by
# (binary, action); anything else unused fails the check: remove it from
# the template, or exercise it in a test, or say here why neither can be.
UNUSED_BUT_NEEDED = {
    ("get-conversation", "dynamodb:UpdateItem"): "completes a pending reply on read when RunPod says it is final (Chat::refresh_pending; tests/integration/pending.rs drives it in process); end to end the webhook always completes the reply first",
    ("delete-conversation", "dynamodb:UpdateItem"): "lets go of a deleted pending reply's token reservation and live generation (Chat::abandon; tests/integration/handlers.rs drives it in process); the end-to-end stack runs without quotas, so there is nothing to let go",
}

# The stream events Lambda's poller reads for the function (Lambda
# Developer Guide, "Lambda execution role permissions" for DynamoDB).
ESM_STREAM_ACTIONS = ["dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"]

# Which variables a function needs, by what its main.rs builds.
NEEDS = [
    ("Callers::Users", ["JWT_SECRET_ARN", "SIGNING_SECRET_ARN"]),
    ("Callers::RunPod", ["SIGNING_SECRET_ARN"]),
    ("with_runpod", ["RUNPOD_API_KEY_ARN", "RUNPOD_ENDPOINT_ID"]),
]


class Failures(list):
    def add(self, msg):
        self.append(msg)


# --- translation -----------------------------------------------------------


def load_template(text):
    from samtranslator.yaml_helper import yaml_parse

    return yaml_parse(text)


def translate(sam):
    """The CloudFormation template `sam deploy` would send, local code
    locations replaced by S3 ones as `sam package` does."""
    os.environ.setdefault("AWS_DEFAULT_REGION", PSEUDO["AWS::Region"])
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(sam)
    for res in sam.get("Resources", {}).values():
        if res.get("Type") == "AWS::Serverless::Function":
            res.setdefault("Properties", {})["CodeUri"] = "s3://bucket/code.zip"

    class NoManagedPolicies:
        def load(self):
            return {}

    return transform(sam, {}, NoManagedPolicies())


# --- references ------------------------------------------------------------

SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


def references(node):
    """(kind, name) of every reference under node: ("ref", X),
    ("getatt", "X.Y"), ("cond", C)."""
    if isinstance(node, dict):
        if len(node) == 1:
            (key, val), = node.items()
            if key == "Ref" and isinstance(val, str):
                yield ("ref", val)
                return
            if key == "Fn::GetAtt":
                name = ".".join(val) if isinstance(val, list) else val
                yield ("getatt", name)
                return
            if key == "Fn::Sub":
                text, local = (val, {}) if isinstance(val, str) else (val[0], val[1])
                for var in SUB_VAR.findall(text):
                    if var in local:
                        continue
                    yield ("getatt", var) if "." in var and not var.startswith("AWS::") else ("ref", var)
                yield from references(local)
                return
            if key == "Fn::If":
                yield ("cond", val[0])
                yield from references(val[1:])
                return
            if key == "Condition" and isinstance(val, str):
                yield ("cond", val)
                return
        for key, val in node.items():
            yield from references(val)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def check_references(cfn, failures):
    params = set(cfn.get("Parameters", {}))
    resources = cfn.get("Resources", {})
    conditions = set(cfn.get("Conditions", {}))
    graph = defaultdict(set)
    places = [("Resources." + n, r) for n, r in resources.items()]
    places += [("Outputs." + n, o) for n, o in cfn.get("Outputs", {}).items()]
    places += [("Conditions." + n, c) for n, c in cfn.get("Conditions", {}).items()]
    for where, node in places:
        for kind, name in references(node):
            if kind == "cond":
                if name not in conditions:
                    failures.add(f"{where}: condition {name!r} does not exist")
                continue
            target = name.split(".", 1)[0] if kind == "getatt" else name
            if kind == "ref" and (name in PSEUDO or name in params or name in resources):
                pass
            elif kind == "getatt" and target in resources:
                pass
            else:
                failures.add(f"{where}: {kind} {name!r} names no parameter, resource or pseudo parameter")
                continue
            if where.startswith("Resources.") and target in resources:
                graph[where.split(".", 1)[1]].add(target)
        if where.startswith("Resources."):
            deps = node.get("DependsOn", [])
            for dep in [deps] if isinstance(deps, str) else deps:
                graph[where.split(".", 1)[1]].add(dep)
    cycle = find_cycle(graph)
    if cycle:
        failures.add("dependency cycle: " + " -> ".join(cycle))


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


# --- evaluation of the few intrinsics policies and environments use --------


def evaluate(node, params, cfn):
    """The value of node with parameters given: resources' ARNs and names as
    recognisable placeholders (arn:...:table/ChatTable)."""
    if isinstance(node, dict) and len(node) == 1:
        (key, val), = node.items()
        if key == "Ref":
            return ref_value(val, params, cfn)
        if key == "Fn::GetAtt":
            name, attr = (val if isinstance(val, list) else val.split(".", 1))
            return getatt_value(name, attr, cfn)
        if key == "Fn::Sub":
            text, local = (val, {}) if isinstance(val, str) else (val[0], val[1])
            local = {k: evaluate(v, params, cfn) for k, v in local.items()}

            def sub(m):
                var = m.group(1)
                if var in local:
                    return str(local[var])
                if "." in var and not var.startswith("AWS::"):
                    name, attr = var.split(".", 1)
                    return str(getatt_value(name, attr, cfn))
                return str(ref_value(var, params, cfn))

            return SUB_VAR.sub(sub, text)
        if key == "Fn::Join":
            sep, items = val
            return sep.join(str(evaluate(i, params, cfn)) for i in items)
        if key == "Fn::If":
            cond, yes, no = val
            return evaluate(yes if condition(cond, params, cfn) else no, params, cfn)
    if isinstance(node, dict):
        out = {k: evaluate(v, params, cfn) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(node, list):
        return [v for v in (evaluate(i, params, cfn) for i in node) if v is not None]
    return node


def condition(name, params, cfn):
    def ev(node):
        if isinstance(node, dict) and len(node) == 1:
            (key, val), = node.items()
            if key == "Fn::Not":
                return not ev(val[0])
            if key == "Fn::Equals":
                a, b = (evaluate(v, params, cfn) for v in val)
                return str(a) == str(b)
            if key == "Fn::And":
                return all(ev(v) for v in val)
            if key == "Fn::Or":
                return any(ev(v) for v in val)
            if key == "Condition":
                return condition(val, params, cfn)
        raise ValueError(f"condition {name}: cannot evaluate {node}")

    return ev(cfn["Conditions"][name])


def ref_value(name, params, cfn):
    if name in PSEUDO:
        return PSEUDO[name]
    if name in params:
        return params[name]
    res = cfn["Resources"].get(name, {})
    kind = res.get("Type", "")
    if kind == "AWS::DynamoDB::Table":
        return name
    return f"{kind}:{name}"


def getatt_value(name, attr, cfn):
    kind = cfn["Resources"].get(name, {}).get("Type", "")
    region, account = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
    if kind == "AWS::DynamoDB::Table":
        table = f"arn:aws:dynamodb:{region}:{account}:table/{name}"
        return {"Arn": table, "StreamArn": f"{table}/stream/2026-12-03T00:00:00.000"}.get(attr)
    if kind == "AWS::SQS::Queue" and attr == "Arn":
        return f"arn:aws:sqs:{region}:{account}:{name}"
    if kind == "AWS::IAM::Role" and attr == "Arn":
        return f"arn:aws:iam::{account}:role/{name}"
    if kind == "AWS::Lambda::Url" and attr == "FunctionUrl":
        return f"https://{name.lower()}.lambda-url.{region}.on.aws/"
    return f"{name}.{attr}"


# --- IAM -------------------------------------------------------------------


def statements(role, params, cfn):
    props = role["Properties"]
    out = []
    for policy in props.get("Policies", []):
        doc = evaluate(policy["PolicyDocument"], params, cfn)
        stmts = doc["Statement"]
        out += [(policy["PolicyName"], s) for s in (stmts if isinstance(stmts, list) else [stmts])]
    for arn in props.get("ManagedPolicyArns", []):
        arn = evaluate(arn, params, cfn)
        if arn not in MANAGED:
            raise ValueError(f"managed policy {arn} is unknown to this check: add its document to MANAGED")
        out += [(arn.rsplit("/", 1)[1], s) for s in MANAGED[arn]]
    return out


def as_list(v):
    return v if isinstance(v, list) else [v]


def matches(pattern, action):
    """Whether an Action pattern covers `action` (IAM action names are
    case-insensitive; `*` and `?` are wildcards)."""
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def allowed(stmts, action, resource):
    """IAM's decision for one action on one resource: an explicit Deny
    wins, else any Allow; which statements allowed it."""
    allows = []
    for name, s in stmts:
        if "NotAction" in s or "NotResource" in s or "Condition" in s:
            raise ValueError(f"{name}: NotAction/NotResource/Condition are beyond this check")
        hit = any(matches(a, action) for a in as_list(s["Action"])) and any(
            fnmatch.fnmatchcase(resource, r) for r in as_list(s["Resource"])
        )
        if hit and s["Effect"] == "Deny":
            return []
        if hit:
            allows.append((name, s))
    return allows


def check_iam(sam, cfn, calls, params, failures, report):
    functions = {n: r for n, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
    region, account = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]
    tables = [n for n, r in cfn["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"]
    if len(tables) != 1:
        failures.add(f"expected one table, found {tables}")
        return
    table_arn = f"arn:aws:dynamodb:{region}:{account}:table/{tables[0]}"
    seen_binaries = {c["function"] for c in calls}
    binaries = {}
    markers_seen = set()
    for name, fn in functions.items():
        binary = fn.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        binaries[binary] = name
        role_ref = cfn["Resources"][name]["Properties"].get("Role", {})
        role_name = role_ref.get("Fn::GetAtt", [None])[0]
        if role_name not in cfn["Resources"]:
            failures.add(f"{name}: no role of the stack")
            continue
        stmts = statements(cfn["Resources"][role_name], params, cfn)
        used = set()  # (statement id, action pattern) pairs that allowed something

        def need(action, resource, why):
            hits = allowed(stmts, action, resource)
            if not hits:
                failures.add(f"{name} ({binary}): {action} on {resource} is not allowed by its role ({why})")
            for policy, s in hits:
                for a in as_list(s["Action"]):
                    if matches(a, action):
                        used.add((policy, a))

        # DynamoDB, from the calls the functions made.
        # (action, index or None): one action may touch the table and an index.
        wanted = sorted(
            {(c["action"], c["index"]) for c in calls if c["function"] == binary},
            key=lambda w: (w[0], w[1] or ""),
        )
        for action, index in wanted:
            resource = table_arn + (f"/index/{index}" if index else "")
            need(action, resource, "a recorded call")
        # Secrets, from the environment (read at cold start).
        env = cfn["Resources"][name]["Properties"].get("Environment", {}).get("Variables", {})
        env = evaluate(env, params, cfn)
        for var, value in sorted(env.items()):
            if var.endswith("_ARN") and var[: -len("_ARN")] in ("JWT_SECRET", "SIGNING_SECRET", "RUNPOD_API_KEY"):
                need("secretsmanager:GetSecretValue", value, f"{var} is read at cold start")
        main = ROOT / "functions" / binary / "src" / "main.rs"
        code = main.read_text() if main.exists() else ""
        for marker, variables in NEEDS:
            if marker in code:
                markers_seen.add(marker)
            for var in variables:
                if marker in code and var not in env:
                    failures.add(f"{name} ({binary}): main.rs builds {marker} but its environment lacks {var}")
        # Lambda's pollers and destinations, from the function's events.
        for ev_name, ev in fn["Properties"].get("Events", {}).items():
            if ev["Type"] == "DynamoDB":
                stream = evaluate(ev["Properties"]["Stream"], params, cfn)
                for action in ESM_STREAM_ACTIONS:
                    need(action, stream, f"event {ev_name}: Lambda reads the stream")
                dest = ev["Properties"].get("DestinationConfig", {}).get("OnFailure", {})
                if dest.get("Type") == "SQS":
                    need("sqs:SendMessage", evaluate(dest["Destination"], params, cfn), f"event {ev_name}: failed batches")
        # Logs (the runtime writes them through the role).
        for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
            need(action, f"arn:aws:logs:{region}:{account}:log-group:/aws/lambda/{name}:*", "the function's logs")
        # What the role allows that nothing above used.
        dynamodb_allowed = any(
            a.startswith("dynamodb:") for policy, s in stmts if not policy.startswith("AWSLambda") for a in as_list(s["Action"])
        )
        if dynamodb_allowed and binary not in seen_binaries:
            failures.add(f"{name} ({binary}): its role allows DynamoDB but no test recorded a call of it (is it exercised end to end?)")
        for policy, s in stmts:
            if policy.startswith("AWSLambda"):
                continue
            for a in as_list(s["Action"]):
                if (policy, a) in used:
                    continue
                why = UNUSED_BUT_NEEDED.get((binary, a))
                if why:
                    report.append(f"  {name}: {a} unused by the tests, kept: {why}")
                else:
                    failures.add(f"{name} ({binary}): its role allows {a} on {as_list(s['Resource'])} but no recorded call or rule needs it: remove it or justify it in UNUSED_BUT_NEEDED")
        ok = not any(f"({binary})" in f for f in failures)
        report.append(f"  {name} ({binary}): {len(wanted)} DynamoDB actions recorded" + (", all allowed" if ok else ": see below"))
    for b in sorted(seen_binaries - set(binaries)):
        report.append(f"  calls of {b!r}, which is no function of the template (ignored)")
    # A marker no main.rs contains checks nothing: renamed in the code, not here.
    for marker, _ in NEEDS:
        if marker not in markers_seen:
            failures.add(f"no function's main.rs contains {marker!r}: was it renamed? (NEEDS in {Path(__file__).name})")


# --- CORS ------------------------------------------------------------------


def check_cors(cfn, params, failures):
    apis = [r for r in cfn["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    for api in apis:
        body = api["Properties"].get("Body", {})
        cors = evaluate(body.get("x-amazon-apigateway-cors"), params, cfn)
        if not isinstance(cors, dict):
            failures.add(f"HTTP API CORS is {cors!r}, not a configuration")
            continue
        want = {
            "allowOrigins": params["CorsOrigins"],
            "allowHeaders": ["authorization", "content-type", "idempotency-key"],
            "exposeHeaders": ["retry-after", "idempotent-replayed"],
            "allowMethods": ["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
        }
        for key, values in want.items():
            got = [str(v).lower() for v in as_list(cors.get(key, []))]
            missing = [v for v in values if v.lower() not in got]
            if missing:
                failures.add(f"HTTP API CORS {key} lacks {missing} (has {cors.get(key)!r})")


# --- the whole check -------------------------------------------------------

PARAMS = {
    "JwtSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:chat/jwt-AbCdEf",
    "SigningSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:chat/signing-AbCdEf",
    "RunPodApiKeySecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:chat/runpod-AbCdEf",
    "CorsOrigins": ["https://app.example.com"],
}


def check(text, calls, report):
    failures = Failures()
    sam = load_template(text)
    try:
        cfn = translate(sam)
    except Exception as e:  # the translator's refusal is a failure like any other
        failures.add(f"the SAM translator refused the template: {e}")
        return failures
    params = {}
    for name, p in cfn.get("Parameters", {}).items():
        params[name] = PARAMS.get(name, p.get("Default", f"<{name}>"))
        if p.get("Type") == "CommaDelimitedList" and isinstance(params[name], str):
            params[name] = params[name].split(",")
    check_references(cfn, failures)
    if failures:
        return failures  # evaluating a template with broken references says nothing more
    check_cors(cfn, params, failures)
    if calls is not None:
        check_iam(sam, cfn, calls, params, failures, report)
    return failures


# Each defect the deployment review found, as the text that puts it back.
DEFECTS = {
    "dependency cycle (a send function's environment names the HTTP API)": (
        'WEBHOOK_BASE_URL: !Sub "${RunPodWebhookFunctionUrl.FunctionUrl}api/chat/runpod/webhook"',
        'WEBHOOK_BASE_URL: !Sub "https://${ChatApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}/api/chat/runpod/webhook"',
    ),
    "CORS origins as a bare reference (the translator breaks it)": (
        "      CorsConfiguration: !If\n"
        "        - AllowBrowsers\n"
        "        - AllowOrigins: !Ref CorsOrigins\n"
        "          AllowMethods: [GET, POST, PUT, PATCH, DELETE, OPTIONS]\n"
        "          AllowHeaders: [authorization, content-type, idempotency-key]\n"
        "          ExposeHeaders: [retry-after, idempotent-replayed]\n"
        "          MaxAge: 600\n"
        "        - !Ref AWS::NoValue\n",
        "      CorsConfiguration:\n"
        "        AllowOrigins: !Ref CorsOrigins\n"
        "        AllowMethods: [GET, POST, PUT, PATCH, DELETE, OPTIONS]\n"
        "        AllowHeaders: [authorization, content-type, idempotency-key]\n"
        "        ExposeHeaders: [retry-after, idempotent-replayed]\n"
        "        MaxAge: 600\n",
    ),
    "the stream function's role without PutItem": (
        "                # Its first write stores the question: a Put in a transaction.\n                - dynamodb:PutItem\n",
        "",
    ),
    # Found by the chat page's browser test (a regenerate over the streamed
    # send, a switch between versions): the moves are a Delete and a Put.
    "the stream function's role without DeleteItem": (
        "                # (found by the chat page's browser test; the check had no call\n"
        "                # of it before).\n"
        "                - dynamodb:DeleteItem\n",
        "",
    ),
    "the rename function's role without PutItem and DeleteItem": (
        "                # the transaction that updates the conversation.\n"
        "                - dynamodb:PutItem\n"
        "                - dynamodb:DeleteItem\n",
        "",
    ),
}


def self_test(text, calls, base_failures):
    """Each defect put back must add a failure of its own: one the check
    of the template as it is does not already report."""
    bad = []
    for name, (good, broken) in DEFECTS.items():
        if good not in text:
            bad.append(f"{name}: the template no longer holds {good!r}; update DEFECTS")
            continue
        mutated = text.replace(good, broken, 1)
        if name.startswith("CORS"):
            # As it was: the parameter's old name, which the translator
            # mangles into a reference to nothing.
            mutated = mutated.replace("CorsOrigins", "CorsAllowOrigins")
        new = [f for f in check(mutated, calls, []) if f not in base_failures]
        if not new:
            bad.append(f"{name}: put back, the check finds nothing new")
        else:
            print(f"self-test: {name}: caught: {new[0][:160]}")
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--template", default=str(ROOT / "template.yaml"))
    ap.add_argument("--calls", help="AWS_CALL_LOG file of an end-to-end run")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    text = Path(args.template).read_text()
    calls = None
    if args.calls:
        calls = [json.loads(line) for line in Path(args.calls).read_text().splitlines() if line.strip()]
        if not calls:
            sys.exit(f"{args.calls} records no call: were the functions run with AWS_CALL_LOG?")
    report = []
    failures = check(text, calls, report)
    print("deployability of template.yaml:")
    print("\n".join(report))
    if args.self_test:
        if calls is None:
            sys.exit("--self-test needs --calls (the IAM defect is found from the calls)")
        failures += self_test(text, calls, list(failures))
    if failures:
        print("FAILED:")
        for f in failures:
            print("  " + f)
        sys.exit(1)
    print("ok: translated, every reference resolves, no cycle, CORS complete" + (", every recorded call allowed" if calls else ""))


if __name__ == "__main__":
    main()
