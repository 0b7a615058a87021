//! The flow table in bulk, with `BPF_MAP_LOOKUP_BATCH` and `BPF_MAP_UPDATE_BATCH`:
//! thousands of entries per syscall instead of one or two syscalls per entry, so a scan
//! or an import of a million flows holds the balancer's owner for a fraction of a
//! second, not seconds.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{HashMap, Map, MapData};
use fulcrum_common::{FlowKey, FlowKey6, FlowValue, flow_cache_index, flow_cache_index6, maps};

use super::Maps;

use crate::BalancerError;

/// `BPF_MAP_LOOKUP_BATCH` of `enum bpf_cmd` (linux/bpf.h), since Linux 5.6.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `BPF_MAP_UPDATE_BATCH`, likewise.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
/// Entries asked for per syscall.
const CHUNK: usize = 8192;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of the flow table. An entry added or evicted meanwhile may be missed or
/// read; none is read twice.
pub(super) fn entries<K: TableKey>(flows: &Map) -> Result<Vec<(K, FlowValue)>, BalancerError> {
    let data = match flows {
        Map::LruHashMap(data) | Map::HashMap(data) => data,
        _ => return Err(super::builder::wrong_type(K::MAP)),
    };
    match batched(data) {
        Ok(out) => Ok(out),
        // A kernel without batch operations: one entry at a time.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => one_by_one(flows),
        Err(source) => Err(BalancerError::Sys {
            call: "bpf(BPF_MAP_LOOKUP_BATCH) on the flow table",
            source,
        }),
    }
}

fn batched<K: TableKey>(data: &MapData) -> std::io::Result<Vec<(K, FlowValue)>> {
    let fd = data.fd().as_fd().as_raw_fd();
    let mut out = Vec::new();
    let mut chunk = CHUNK;
    // Hash tables resume from a bucket index.
    let mut token: u32 = 0;
    let mut next: u32 = 0;
    let mut first = true;
    loop {
        let mut keys = vec![K::default(); chunk];
        let mut values = vec![FlowValue::default(); chunk];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at buffers of `count` keys and values of the table's
        // sizes (16 and 8 bytes), and at the two tokens; all outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(std::io::Error::last_os_error);
        let got = (attr.count as usize).min(chunk);
        out.extend(keys.into_iter().zip(values).take(got));
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
            // One bucket holds more entries than asked for.
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && got == 0 => {
                chunk *= 2;
                continue;
            }
            Some(e) => return Err(e),
        }
        token = next;
        first = false;
    }
}

/// Writes `entries` to the flow table; returns how many were written (all, unless the
/// kernel refused one: the rest are not tried).
pub(super) fn write<K: TableKey>(
    flows: &mut Map,
    entries: &[(K, FlowValue)],
) -> Result<usize, BalancerError> {
    let fd = match &*flows {
        Map::LruHashMap(data) | Map::HashMap(data) => data.fd().as_fd().as_raw_fd(),
        _ => return Err(super::builder::wrong_type(K::MAP)),
    };
    let mut written = 0;
    for chunk in entries.chunks(CHUNK) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<FlowValue> = chunk.iter().map(|(_, v)| *v).collect();
        let mut attr = BatchAttr {
            keys: keys.as_ptr() as u64,
            values: values.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: fd as u32,
            ..Default::default()
        };
        // SAFETY: attr points at `count` keys and values of the table's sizes, which
        // outlive the call; the kernel only reads them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        if rc == 0 {
            written += chunk.len();
            continue;
        }
        let unsupported = std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL);
        if unsupported && written == 0 && attr.count == 0 {
            return one_at_a_time(flows, entries);
        }
        return Ok(written + (attr.count as usize).min(chunk.len()));
    }
    Ok(written)
}

/// [`write`] on a kernel without batch operations.
fn one_at_a_time<K: TableKey>(
    flows: &mut Map,
    entries: &[(K, FlowValue)],
) -> Result<usize, BalancerError> {
    let mut table: HashMap<&mut MapData, K, FlowValue> =
        HashMap::try_from(flows).map_err(BalancerError::map(maps::FLOWS, "open"))?;
    Ok(entries
        .iter()
        .take_while(|(key, value)| table.insert(key, value, 0).is_ok())
        .count())
}

fn one_by_one<K: TableKey>(flows: &Map) -> Result<Vec<(K, FlowValue)>, BalancerError> {
    let table: HashMap<&MapData, K, FlowValue> =
        HashMap::try_from(flows).map_err(BalancerError::map(maps::FLOWS, "open"))?;
    // An entry evicted while the walk is on it is skipped, not an error.
    Ok(table.iter().filter_map(Result::ok).collect())
}

/// A flow table's key: each family has its table (`FLOWS`, `FLOWS6`).
pub(super) trait TableKey: aya::Pod + Default + Copy {
    /// The table's map name.
    const MAP: &'static str;
    /// The family's table.
    fn table(maps: &Maps) -> &Map;
    fn table_mut(maps: &mut Maps) -> &mut Map;
    /// Its flow cache index (and FLOW_EPOCH's), before masking.
    fn cache_index(&self) -> u32;
}

impl TableKey for FlowKey {
    const MAP: &'static str = maps::FLOWS;
    fn table(maps: &Maps) -> &Map {
        &maps.flows
    }
    fn table_mut(maps: &mut Maps) -> &mut Map {
        &mut maps.flows
    }
    fn cache_index(&self) -> u32 {
        flow_cache_index(self)
    }
}

impl TableKey for FlowKey6 {
    const MAP: &'static str = maps::FLOWS6;
    fn table(maps: &Maps) -> &Map {
        &maps.flows6
    }
    fn table_mut(maps: &mut Maps) -> &mut Map {
        &mut maps.flows6
    }
    fn cache_index(&self) -> u32 {
        flow_cache_index6(self)
    }
}
