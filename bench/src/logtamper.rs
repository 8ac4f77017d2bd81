//! `tollgate-bench log-tamper`: changes a stopped node's request log behind its back, as
//! someone with the data dir and database tools could, so tests can show that
//! `tollgate audit verify` notices. Flip one byte of a record, delete one, or cut the
//! log off at a sequence (moving the stored head back with it, as a careful forger would).

use fjall::{Database, KeyspaceCreateOptions};
use tollgate_node::governance::records::keys::{self, Slot};
use tollgate_proto::records::ChainedRecord;

#[derive(clap::Args)]
pub struct LogTamperArgs {
    /// The node's request log (`DATA_DIR/logs`); the node must be stopped.
    #[arg(long)]
    dir: std::path::PathBuf,
    /// The record's sequence in the node's chain.
    #[arg(long)]
    seq: u64,
    /// flip | delete | truncate
    #[arg(long)]
    how: String,
}

pub fn run(args: LogTamperArgs) -> anyhow::Result<()> {
    let db = Database::builder(&args.dir).open()?;
    let mut found = Vec::new();
    for name in db.list_keyspace_names() {
        if !matches!(keys::parse_keyspace(&name), Some((b'r', _))) {
            continue;
        }
        let keyspace = db.keyspace(&name, KeyspaceCreateOptions::default)?;
        for item in keyspace.prefix([b'r']) {
            let (key, value) = item.into_inner()?;
            if let Some(slot) = Slot::from_tail(&key) {
                found.push((slot.seq, keyspace.clone(), key.to_vec(), value.to_vec()));
            }
        }
    }
    found.sort_by_key(|f| f.0);
    match args.how.as_str() {
        "flip" => {
            let (_, keyspace, key, mut value) = found
                .into_iter()
                .find(|f| f.0 == args.seq)
                .ok_or_else(|| anyhow::anyhow!("no record {}", args.seq))?;
            // A byte of the record itself (its last field), not of the chain's hashes.
            let at = value.len() - 2;
            value[at] ^= 0x01;
            keyspace.insert(key, value)?;
        }
        "delete" => {
            let (_, keyspace, key, _) = found
                .into_iter()
                .find(|f| f.0 == args.seq)
                .ok_or_else(|| anyhow::anyhow!("no record {}", args.seq))?;
            keyspace.remove(key)?;
        }
        "truncate" => {
            let mut head = None;
            for (seq, keyspace, key, value) in found {
                if seq >= args.seq {
                    keyspace.remove(key)?;
                } else if seq + 1 == args.seq {
                    let r: ChainedRecord = tollgate_raft::codec::decode(&value)?;
                    head = Some((r.seq, r.hash));
                }
            }
            if let Some((seq, hash)) = head {
                let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
                let mut bytes = seq.to_be_bytes().to_vec();
                bytes.extend_from_slice(&hash);
                meta.insert("chain", bytes)?;
            }
        }
        other => anyhow::bail!("--how must be flip, delete or truncate, not {other}"),
    }
    db.persist(fjall::PersistMode::SyncAll)?;
    Ok(())
}
