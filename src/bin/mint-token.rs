//! Prints a JWT for local calls: `mint-token [USER] [TTL_SECONDS]`.
//! Signed with `JWT_SECRET`, or the local development secret when unset.

use chat_service_dev::DEV_JWT_SECRET;

fn main() {
    let mut args = std::env::args().skip(1);
    let user = args.next().unwrap_or_else(|| "local-user".to_owned());
    let ttl: u64 = match args.next().map(|t| t.parse()) {
        None => 24 * 3600,
        Some(Ok(t)) => t,
        Some(Err(_)) => {
            eprintln!("usage: mint-token [USER] [TTL_SECONDS]");
            std::process::exit(2);
        }
    };
    let secret = std::env::var("JWT_SECRET").unwrap_or_else(|_| DEV_JWT_SECRET.to_owned());
    let iss = std::env::var("JWT_ISSUER").ok().filter(|s| !s.is_empty());
    let aud = std::env::var("JWT_AUDIENCE").ok().filter(|s| !s.is_empty());
    println!(
        "{}",
        chat_shared::auth::issue_token(&secret, &user, ttl, iss.as_deref(), aud.as_deref())
    );
}
