//! Just enough of an ELF file to tell whether it can start: its machine, its loader
//! (`PT_INTERP`), the libraries it needs (`DT_NEEDED`) and where it says they are
//! (`DT_RUNPATH`, `DT_RPATH`). Parsed with goblin from bounded reads at the offsets the
//! headers give: a file from the image is untrusted, so it is never read whole and every
//! size is capped.

use std::fs::File;
use std::os::unix::fs::FileExt;

use goblin::container::Ctx;
use goblin::elf::dynamic::{DT_NEEDED, DT_RPATH, DT_RUNPATH, Dynamic};
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP, ProgramHeader};
use goblin::elf::{Elf, Header};

/// Caps on what is read: program headers, the loader's name, the dynamic section, and the
/// dynamic string table.
const MAX_PHDRS: usize = 1024;
const MAX_INTERP: usize = 4096;
const MAX_DYNAMIC: usize = 256 << 10;
const MAX_STRTAB: usize = 8 << 20;

/// What the start check needs of an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    /// `e_machine`.
    pub machine: u16,
    pub is_64: bool,
    /// The loader, `PT_INTERP` (none: a static executable).
    pub interp: Option<String>,
    pub needed: Vec<String>,
    /// `DT_RUNPATH` and `DT_RPATH`, split at `:`.
    pub runpath: Vec<String>,
    pub rpath: Vec<String>,
}

/// Whether the first bytes of a file are an ELF magic number.
pub(crate) fn is_elf(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF")
}

/// `len` bytes at `offset`, if they are inside the file and at most `cap`.
fn read_at(file: &File, size: u64, offset: u64, len: u64, cap: usize) -> Result<Vec<u8>, String> {
    let end = offset.checked_add(len).ok_or("an offset overflows")?;
    if len > cap as u64 {
        return Err(format!(
            "a header of {len} bytes is over the limit of {cap}"
        ));
    }
    if end > size {
        return Err("a header points past the end of the file".into());
    }
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

/// Parse the parts of `file` (of `size` bytes) the start check needs.
pub(crate) fn read(file: &File, size: u64) -> Result<ElfInfo, String> {
    let head = read_at(file, size, 0, size.min(64), 64)?;
    let header: Header = Elf::parse_header(&head).map_err(|e| e.to_string())?;
    let ctx = Ctx::new(
        header.container().map_err(|e| e.to_string())?,
        header.endianness().map_err(|e| e.to_string())?,
    );
    let count = usize::from(header.e_phnum);
    if count > MAX_PHDRS {
        return Err(format!("{count} program headers"));
    }
    let entsize = u64::from(header.e_phentsize);
    let table = read_at(
        file,
        size,
        header.e_phoff,
        entsize * count as u64,
        MAX_PHDRS * 64,
    )?;
    let phdrs = ProgramHeader::parse(&table, 0, count, ctx).map_err(|e| e.to_string())?;
    let mut info = ElfInfo {
        machine: header.e_machine,
        is_64: ctx.is_big(),
        interp: None,
        needed: Vec::new(),
        runpath: Vec::new(),
        rpath: Vec::new(),
    };
    if let Some(p) = phdrs.iter().find(|p| p.p_type == PT_INTERP) {
        let bytes = read_at(file, size, p.p_offset, p.p_filesz, MAX_INTERP)?;
        let name = bytes.split(|b| *b == 0).next().unwrap_or_default();
        info.interp = Some(String::from_utf8_lossy(name).into_owned());
    }
    read_dynamic(file, size, &phdrs, ctx, &mut info)?;
    Ok(info)
}

/// `DT_NEEDED`, `DT_RUNPATH` and `DT_RPATH` from the dynamic section and its string table.
fn read_dynamic(
    file: &File,
    size: u64,
    phdrs: &[ProgramHeader],
    ctx: Ctx,
    info: &mut ElfInfo,
) -> Result<(), String> {
    let Some(dynamic) = phdrs.iter().find(|p| p.p_type == PT_DYNAMIC) else {
        return Ok(());
    };
    let bytes = read_at(file, size, dynamic.p_offset, dynamic.p_filesz, MAX_DYNAMIC)?;
    // The section as its own buffer: the same headers, PT_DYNAMIC at offset 0.
    let moved: Vec<ProgramHeader> = phdrs
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if p.p_type == PT_DYNAMIC {
                p.p_offset = 0;
            }
            p
        })
        .collect();
    let Some(parsed) = Dynamic::parse(&bytes, &moved, ctx).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let (off, len) = (parsed.info.strtab as u64, parsed.info.strsz as u64);
    if off == 0 || len == 0 {
        return Ok(());
    }
    let strings = read_at(file, size, off, len, MAX_STRTAB)?;
    // A NUL-terminated string of the table (`DT_STRTAB`, `DT_STRSZ`).
    let text = |v: u64| -> Result<String, String> {
        let tail = usize::try_from(v)
            .ok()
            .and_then(|at| strings.get(at..))
            .ok_or_else(|| format!("a dynamic string at {v} is out of bounds"))?;
        let s = tail.split(|b| *b == 0).next().unwrap_or_default();
        Ok(String::from_utf8_lossy(s).into_owned())
    };
    for d in &parsed.dyns {
        match d.d_tag {
            DT_NEEDED => info.needed.push(text(d.d_val)?),
            DT_RUNPATH => info
                .runpath
                .extend(text(d.d_val)?.split(':').map(str::to_string)),
            DT_RPATH => info
                .rpath
                .extend(text(d.d_val)?.split(':').map(str::to_string)),
            _ => {}
        }
    }
    info.runpath.retain(|d| !d.is_empty());
    info.rpath.retain(|d| !d.is_empty());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_loader_and_libraries_of_a_dynamic_program() {
        // This test binary itself: dynamic on glibc hosts.
        let exe = std::env::current_exe().unwrap();
        let file = File::open(&exe).unwrap();
        let size = file.metadata().unwrap().len();
        let info = read(&file, size).unwrap();
        assert!(
            info.interp.as_deref().unwrap_or("").contains("ld-"),
            "{info:?}"
        );
        assert!(
            info.needed.iter().any(|n| n.starts_with("libc.so")),
            "{info:?}"
        );
    }

    #[test]
    fn refuses_headers_that_point_outside_or_are_too_big() {
        let dir = tempfile::tempdir().unwrap();
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let cut = dir.path().join("cut");
        std::fs::write(&cut, &exe[..200]).unwrap();
        let file = File::open(&cut).unwrap();
        assert!(read(&file, 200).is_err());
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"\x7fELF\x02\x01\x01").unwrap();
        assert!(read(&File::open(&junk).unwrap(), 7).is_err());
    }
}
