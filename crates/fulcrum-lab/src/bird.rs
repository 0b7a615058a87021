//! BIRD 2 as a lab's router: started in its namespace with a config written for it,
//! queried through its control socket with `birdc`, killed and cleaned up on drop.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{NetNs, run};

/// A BGP neighbour of the router.
#[derive(Clone, Debug)]
pub struct Neighbor {
    /// Protocol name in BIRD (`show protocols`), e.g. `lb1`.
    pub name: String,
    /// The neighbour's address.
    pub address: Ipv4Addr,
    /// The neighbour's ASN.
    pub asn: u32,
}

/// How the router learns the VIP's routes.
#[derive(Clone, Debug)]
pub enum Routes {
    /// A static multipath route to `prefix` via these next hops (no BGP).
    Static {
        /// The prefix, e.g. `10.78.99.1/32`.
        prefix: String,
        /// The ECMP next hops.
        via: Vec<Ipv4Addr>,
    },
    /// Passive BGP sessions to these neighbours; what they announce is installed.
    Bgp {
        /// The router's ASN.
        asn: u32,
        /// Hold time in seconds (3 or more); keepalives go at a third of it.
        hold_secs: u16,
        /// The neighbours.
        neighbors: Vec<Neighbor>,
    },
}

/// What goes into the router's `bird.conf`.
#[derive(Clone, Debug)]
pub struct BirdConfig {
    /// The router ID (one of the router's addresses).
    pub router_id: Ipv4Addr,
    /// The router's own address on the neighbours' subnet (BGP `local`).
    pub local: Ipv4Addr,
    /// Static routes or BGP.
    pub routes: Routes,
}

impl BirdConfig {
    /// The config text: a device protocol, a kernel protocol that exports every route with
    /// `merge paths yes` (so equal BGP paths become one ECMP route), and the routes.
    pub fn render(&self) -> String {
        let mut text = format!(
            "router id {};\n\
             protocol device {{ scan time 1; }}\n\
             protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths yes;\n}}\n",
            self.router_id
        );
        match &self.routes {
            Routes::Static { prefix, via } => {
                let hops: String = via.iter().map(|v| format!(" via {v}")).collect();
                text.push_str(&format!(
                    "protocol static vip {{\n  ipv4;\n  route {prefix}{hops};\n}}\n"
                ));
            }
            Routes::Bgp {
                asn,
                hold_secs,
                neighbors,
            } => {
                for n in neighbors {
                    text.push_str(&format!(
                        "protocol bgp {name} {{\n  local {local} as {asn};\n  neighbor {addr} as {peer_asn};\n  passive on;\n  hold time {hold};\n  keepalive time {keep};\n  error wait time 1, 2;\n  graceful restart on;\n  ipv4 {{ import all; export none; }};\n}}\n",
                        name = n.name,
                        local = self.local,
                        addr = n.address,
                        peer_asn = n.asn,
                        hold = hold_secs,
                        keep = (hold_secs / 3).max(1),
                    ));
                }
            }
        }
        text
    }
}

/// A running BIRD; killed, and its files removed, on drop.
pub struct Bird {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
}

impl Bird {
    /// Writes `config` into `dir` (created) and starts `bird -f` in `ns`; waits until its
    /// control socket answers.
    pub fn start(ns: &NetNs, dir: &Path, config: &BirdConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config.render())
            .with_context(|| format!("writing {}", conf.display()))?;
        let socket = dir.join("bird.ctl");
        let log = std::fs::File::create(dir.join("bird.log"))?;
        let mut command = ns.command("bird");
        command
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdout(Stdio::null())
            .stderr(log);
        let child = command
            .spawn()
            .context("starting bird (Debian's bird2; scripts/setup.sh installs it)")?;
        let bird = Self {
            child: Some(child),
            dir: dir.to_path_buf(),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while bird.birdc(&["show", "status"]).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "bird did not answer on {} within 10 s; its log: {}",
                    bird.socket.display(),
                    bird.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    /// `birdc -s SOCKET ARGS...`, its output.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        run(Command::new("birdc").arg("-s").arg(&self.socket).args(args))
    }

    /// The next hops of every path to `prefix` BIRD holds (`birdc show route for PREFIX`:
    /// one per BGP neighbour announcing it, or the static route's); empty when none.
    pub fn next_hops(&self, prefix: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
        let out = self.birdc(&["show", "route", "for", prefix])?;
        Ok(parse_next_hops(&out))
    }

    /// Whether BIRD's BGP protocol `name` has its session up.
    pub fn established(&self, name: &str) -> bool {
        self.birdc(&["show", "protocols", name])
            .is_ok_and(|out| out.contains("Established"))
    }

    /// Every route to `prefix` BIRD holds, one line per path with its protocol.
    pub fn routes(&self, prefix: &str) -> anyhow::Result<String> {
        self.birdc(&["show", "route", "for", prefix, "all"])
    }

    /// Rewrites the config and tells BIRD to read it again.
    pub fn reconfigure(&self, config: &BirdConfig) -> anyhow::Result<()> {
        std::fs::write(self.dir.join("bird.conf"), config.render())?;
        let out = self.birdc(&["configure"])?;
        if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
            bail!("bird refused the new config: {out}");
        }
        Ok(())
    }

    /// BIRD's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }

    /// The directory with the config, socket and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `via ADDR` next hops in `birdc show route` output (one per path of a multipath
/// route, or the single one).
fn parse_next_hops(out: &str) -> Vec<Ipv4Addr> {
    let mut hops: Vec<Ipv4Addr> = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    hops.sort();
    hops.dedup();
    hops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hops_of_a_multipath_and_a_single_route() {
        let multi = "Table master4:\n10.78.99.1/32        unicast [lb1 00:50:01.123] * (100) [AS65001i]\n\tvia 10.78.0.12 on eth0 weight 1\n\tvia 10.78.0.11 on eth0 weight 1\n";
        assert_eq!(
            parse_next_hops(multi),
            vec![Ipv4Addr::new(10, 78, 0, 11), Ipv4Addr::new(10, 78, 0, 12)]
        );
        let single = "Table master4:\n10.78.99.1/32        unicast [lb2 00:50:01] * (100) [AS65001i]\n\tvia 10.78.0.12 on eth0\n";
        assert_eq!(parse_next_hops(single), vec![Ipv4Addr::new(10, 78, 0, 12)]);
        assert!(parse_next_hops("Table master4:\n").is_empty());
    }
}
