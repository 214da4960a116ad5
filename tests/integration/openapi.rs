//! The contract (`openapi.yaml`) is the list of routes, and every other
//! list is checked against it: `template.yaml` (deployed) and `cargo lambda
//! watch`'s router in `Cargo.toml` (local) serve exactly its routes, each
//! with the same binary, and every binary is a crate under `functions/`.
//! A route added to one and not the others fails here (README: "Adding a
//! route").

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

/// `METHOD /path` pairs.
type Routes = BTreeSet<String>;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn read(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn yaml(file: &str) -> Value {
    serde_yaml::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn documented() -> Routes {
    let doc = yaml("openapi.yaml");
    let paths = doc["paths"].as_mapping().expect("openapi.yaml has paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let path = path.as_str().unwrap().to_owned();
            METHODS
                .iter()
                .filter(move |m| item.get(**m).is_some())
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect()
}

/// The HttpApi events of every function in `template.yaml`, and the route
/// of a function served through its URL (`Metadata.Route`), which the
/// CloudFront distribution must send to that function's origin unless only
/// RunPod calls it (`Metadata.CalledBy: RunPod`, the webhook).
fn deployed() -> Routes {
    deployed_binaries().into_keys().collect()
}

/// Each deployed route and the binary serving it
/// (`Metadata.BuildProperties.Binary` of its function).
fn deployed_binaries() -> BTreeMap<String, String> {
    let template = yaml("template.yaml");
    let resources = template["Resources"].as_mapping().unwrap();
    let binary = |r: &Value| {
        r["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .map(str::to_owned)
    };
    let mut routes: BTreeMap<String, String> = resources
        .values()
        .filter_map(|r| Some((r["Properties"]["Events"].as_mapping()?, binary(r)?)))
        .flat_map(|(events, binary)| {
            events
                .values()
                .filter(|event| event["Type"] == "HttpApi")
                .map(move |event| {
                    let p = &event["Properties"];
                    let route = format!(
                        "{} {}",
                        p["Method"].as_str().unwrap(),
                        p["Path"].as_str().unwrap()
                    );
                    (route, binary.clone())
                })
        })
        .collect();
    let behaviors = &template["Resources"]["ApiDistribution"]["Properties"]["DistributionConfig"]
        ["CacheBehaviors"];
    for (name, resource) in resources {
        let Some(route) = resource["Metadata"]["Route"].as_str() else {
            continue;
        };
        let served_by = binary(resource).unwrap_or_else(|| panic!("{name:?} names no binary"));
        routes.insert(route.to_owned(), served_by);
        if resource["Metadata"]["CalledBy"] == "RunPod" {
            // Not a client's route: RunPod posts to the function's URL.
            assert!(
                resource["Properties"]["FunctionUrlConfig"].is_mapping(),
                "{route} ({name:?}) has no function URL"
            );
            continue;
        }
        // CloudFront's path patterns take `*` where the route has `{id}`.
        let path = route.split_once(' ').unwrap().1;
        let pattern: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "*" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let origins = &template["Resources"]["ApiDistribution"]["Properties"]["DistributionConfig"]
            ["Origins"];
        let url = format!("{}Url", name.as_str().unwrap());
        let to_its_url =
            |origin_id: &serde_yaml::Value| {
                origins.as_sequence().unwrap().iter().any(|o| {
                    &o["Id"] == origin_id && format!("{:?}", o["DomainName"]).contains(&url)
                })
            };
        let sent_there = behaviors
            .as_sequence()
            .unwrap()
            .iter()
            .any(|b| b["PathPattern"] == pattern.as_str() && to_its_url(&b["TargetOriginId"]));
        assert!(
            sent_there,
            "{route} ({name:?}) has no CloudFront behavior to its URL"
        );
    }
    routes
}

/// `[workspace.metadata.lambda.watch.router]` in `Cargo.toml`.
fn served_locally() -> Routes {
    served_locally_by().into_keys().collect()
}

/// Each route of the local router and the binary (function) serving it.
fn served_locally_by() -> BTreeMap<String, String> {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let router = manifest["workspace"]["metadata"]["lambda"]["watch"]["router"]
        .as_table()
        .expect("Cargo.toml has a cargo lambda watch router");
    router
        .iter()
        .flat_map(|(path, routes)| {
            let routes = routes.as_array().unwrap();
            routes.iter().map(move |r| {
                let route = format!("{} {path}", r["method"].as_str().unwrap());
                (route, r["function"].as_str().unwrap().to_owned())
            })
        })
        .collect()
}

#[test]
fn each_route_is_served_by_the_same_binary_deployed_and_locally_and_each_binary_is_a_crate() {
    let deployed = deployed_binaries();
    let local = served_locally_by();
    for (route, binary) in &deployed {
        if let Some(there) = local.get(route) {
            assert_eq!(
                there, binary,
                "{route}: template.yaml and Cargo.toml's router name other binaries"
            );
        }
        let manifest = format!("functions/{binary}/Cargo.toml");
        let crate_name = read(&manifest).parse::<toml::Table>().unwrap()["package"]["name"].clone();
        assert_eq!(crate_name.as_str(), Some(binary.as_str()), "{manifest}");
    }
}

#[test]
fn the_contract_names_exactly_the_routes_that_are_served() {
    let documented = documented();
    assert!(documented.contains("POST /api/chat/send"), "{documented:?}");
    for (name, served) in [
        ("template.yaml", deployed()),
        ("the cargo lambda watch router", served_locally()),
    ] {
        let undocumented: Vec<_> = served.difference(&documented).collect();
        let unserved: Vec<_> = documented.difference(&served).collect();
        assert!(
            undocumented.is_empty() && unserved.is_empty(),
            "{name} serves {undocumented:?} that openapi.yaml lacks; \
             openapi.yaml names {unserved:?} that {name} does not serve"
        );
    }
}

#[test]
fn every_operation_documents_its_errors_and_an_operation_id() {
    let doc = yaml("openapi.yaml");
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_some()) {
            let op = &item[*method];
            let at = format!("{method} {}", path.as_str().unwrap());
            assert!(op["operationId"].is_string(), "{at}: no operationId");
            let responses = op["responses"].as_mapping().unwrap();
            let public = op
                .get("security")
                .is_some_and(|s| s == &Value::Sequence(vec![]));
            if path.as_str().unwrap().starts_with("/api/") {
                assert!(responses.contains_key("500"), "{at}: no 500");
                assert!(responses.contains_key("401") || public, "{at}: no 401");
            }
        }
    }
}
