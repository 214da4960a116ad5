//! The benchmark's report as markdown tables, from its JSON.

use serde_json::Value;

/// Prints every table of the report `r`.
pub fn print(r: &Value) {
    println!(
        "machine: {} ({} cores)",
        r["machine"]["cpu"].as_str().unwrap_or(""),
        r["machine"]["cores"]
    );
    println!();
    functions(r);
    sweeps(r);
    calls(r);
    stream(r);
    export_all(r);
    lags(r);
}

/// Issue 29: the export of every conversation, by the user's count of them.
fn export_all(r: &Value) {
    let Some(points) = r["export_all"].as_object() else {
        return;
    };
    println!("| export-all (NDJSON, conversations of 50 messages) | warm time p50 / max (ms) | body (MB) | lines | CPU per invocation (ms) | DynamoDB calls per invocation | peak RSS (MB) |");
    println!("|---|---|---|---|---|---|---|");
    for (n, p) in points {
        println!(
            "| {n} conversations | {} / {} | {} | {} | {} | {} | {} |",
            p["ms_p50"],
            p["ms_max"],
            p["body_mb"],
            p["lines"],
            p["cpu_ms_per_invocation"],
            call_counts(&p["dynamodb_calls_per_invocation"]),
            p["peak_rss_mb"]
        );
    }
    println!();
}

/// Issue 28: from a job's end at RunPod to the reply at the client.
fn lags(r: &Value) {
    let Some(bins) = r["lags"].as_object().filter(|b| !b.is_empty()) else {
        return;
    };
    println!("| reply lag after the job ends | job (s) | turns | p50 / p99 / max (ms) | RunPod calls per turn |");
    println!("|---|---|---|---|---|");
    for (bin, rows) in bins {
        for (secs, row) in rows.as_object().into_iter().flatten() {
            println!(
                "| {bin} | {secs} | {} | {} / {} / {} | {:.1} |",
                row["turns"],
                row["lag_ms_p50"],
                row["lag_ms_p99"],
                row["lag_ms_max"],
                row["runpod_calls_per_turn"].as_f64().unwrap_or(0.0)
            );
        }
    }
    println!();
}

/// The streamed reply's chunk-to-client delays.
fn stream(r: &Value) {
    let s = &r["stream"];
    if s.is_null() {
        return;
    }
    println!("| streamed reply (stream-message, warm) | value |");
    println!("|---|---|");
    println!(
        "| replies × chunks per reply | {} × {} |",
        s["replies"], s["chunks_per_reply"]
    );
    println!(
        "| delay from a chunk written at RunPod to its `message.delta` at the client: p50 / p99 / max (ms) | {} / {} / {} |",
        s["delay_ms_p50"], s["delay_ms_p99"], s["delay_ms_max"]
    );
    println!();
}

/// `Query×1, TransactWriteItems×2`.
fn call_counts(counts: &Value) -> String {
    let counts = counts.as_object().into_iter().flatten();
    let cells: Vec<String> = counts.map(|(k, v)| format!("{k}×{v}")).collect();
    cells.join(", ")
}

fn functions(r: &Value) {
    println!("| function | init median / max (ms) | first invocation (ms) | warm p50 / p99 (ms) | CPU per invocation (µs): scheduled; user + system ticks | peak RSS (MB) | binary / deflated (MB) | DynamoDB calls | RunPod calls |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, f) in r["functions"].as_object().into_iter().flatten() {
        println!(
            "| {name} | {} / {} | {} | {} / {} | {}; {} + {} | {} | {} / {} | {} | {} |",
            f["init_ms_median"],
            f["init_ms_max"],
            f["first_invocation_ms_median"],
            f["warm_ms_p50"],
            f["warm_ms_p99"],
            f["cpu_us_per_invocation"],
            f["user_cpu_us_per_invocation"],
            f["system_cpu_us_per_invocation"],
            f["peak_rss_mb"],
            f["binary_mb"],
            f["deflated_mb"],
            call_counts(&f["dynamodb_calls_per_invocation"]),
            f["runpod_calls_per_invocation"],
        );
    }
}

fn sweeps(r: &Value) {
    let sweeps = r["sweeps"].as_object().unwrap();
    if sweeps.is_empty() {
        return;
    }
    println!();
    println!("| sweep | 10 | 1 000 | 10 000 |");
    println!("|---|---|---|---|");
    for (name, points) in sweeps {
        let cell = |n: &str| {
            let p = &points[n];
            format!(
                "{} / {} ms, {} µs CPU, {} DynamoDB call(s)",
                p["p50_ms"],
                p["p99_ms"],
                p["cpu_us_per_invocation"],
                p["dynamodb_calls_per_invocation"]
            )
        };
        println!(
            "| {name}: p50 / p99, CPU, calls | {} | {} | {} |",
            cell("10"),
            cell("1000"),
            cell("10000")
        );
    }
}

fn calls(r: &Value) {
    let Some(rows) = r["calls"]["rows"].as_array() else {
        return;
    };
    println!();
    println!(
        "| client CPU per call, in process ({} calls each) | CPU (µs) | user + system ticks (µs) | wall (µs) |",
        r["calls"]["calls_per_row"]
    );
    println!("|---|---|---|---|");
    for c in rows {
        println!(
            "| {} | {} | {} + {} | {} |",
            c["call"].as_str().unwrap_or(""),
            c["cpu_us"],
            c["user_us"],
            c["system_us"],
            c["wall_us"]
        );
    }
    // Every invocation is also two Runtime API exchanges (next, response).
    let bare = rows[0]["cpu_us"].as_f64().unwrap_or(0.0);
    for (name, f) in r["functions"].as_object().into_iter().flatten() {
        let Some(ddb) = f["dynamodb_calls_per_invocation"].as_object() else {
            continue;
        };
        let exchanges = 2
            + ddb.values().filter_map(Value::as_u64).sum::<u64>()
            + f["runpod_calls_per_invocation"].as_u64().unwrap_or(0);
        println!(
            "{name}: {exchanges} HTTP exchanges per invocation, at least {:.0} µs of CPU at {bare} µs each",
            exchanges as f64 * bare
        );
    }
}
