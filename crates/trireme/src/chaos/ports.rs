//! Free loopback ports for replicas started later: used by the chaos harness's
//! loopback mode and, through `#[path]`, by the process tests' `tests/support`.
//! Depends only on std and rand, so that both can compile it.

use std::net::TcpListener;

/// A port free on 127.0.0.1 now, for a replica to bind later. It is drawn below the
/// kernel's ephemeral range, so an outgoing connection on the machine cannot take it
/// between this check and the replica's bind (a replica that cannot bind its port
/// never starts), and it is never handed out twice by this process. Falls back to a
/// kernel-chosen port when that range is too small or taken.
pub fn free_loopback_port() -> std::io::Result<u16> {
    use rand::Rng as _;
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let below = ephemeral_low().min(32_768);
    if below > 21_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let port = rng.gen_range(20_000..below);
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return Ok(port);
            }
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
pub fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}
