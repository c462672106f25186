//! Go's `pclntab` (`.gopclntab`): the function table the runtime uses for tracebacks, kept in
//! stripped binaries. Only what is needed to find a function by name and its address range is
//! read. Layouts follow Go's `src/debug/gosym/pclntab.go` and `runtime/symtab.go`:
//!
//! * header: magic `u32`, two zero bytes, PC quantum, pointer size, then pointer-sized words;
//! * 1.18+ (`0xfffffff0`, `0xfffffff1` for 1.20+): words `nfunc, nfiles, textStart,
//!   funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset`; the function table at
//!   `pclnOffset` holds `nfunc + 1` pairs of `u32` (entry relative to `textStart`, offset of the
//!   `_func` from `pclnOffset`), the last entry giving the end of the last function;
//!   `_func` starts `entryOff u32, nameOff i32`, the name being a C string at
//!   `funcnameOffset + nameOff`;
//! * 1.16-1.17 (`0xfffffffa`): the same without `textStart`, and pointer-sized pairs holding
//!   absolute PCs; `_func` starts `entry uintptr, nameOff i32`;
//! * 1.2-1.15 (`0xfffffffb`): `nfunc` then the table right after it, every offset relative to the
//!   start of the section.
//!
//! A function ends where the next one in the table starts (so its range includes the `INT3`
//! padding the linker put after it).

use std::ops::Range;

use super::InspectError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layout {
    Go12,
    Go116,
    /// 1.18 and 1.20+ (the 1.20 magic changed, the parts read here did not).
    Go118,
}

#[derive(Debug, Clone)]
pub(super) struct Pclntab<'a> {
    data: &'a [u8],
    layout: Layout,
    ptr_size: usize,
    nfunc: usize,
    text_start: u64,
    /// Offset of the function-name table in `data`.
    funcnames: usize,
    /// Offset that `_func` offsets are relative to (it also holds the function table).
    funcdata: usize,
    functab: usize,
}

fn truncated(what: &'static str, need: usize, data: &[u8]) -> InspectError {
    InspectError::TruncatedPclntab {
        what,
        need: need as u64,
        len: data.len() as u64,
    }
}

fn bad(reason: String) -> InspectError {
    InspectError::BadPclntab { reason }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_word(data: &[u8], at: usize, size: usize) -> Option<u64> {
    if size == 4 {
        return read_u32(data, at).map(u64::from);
    }
    let bytes = data.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

impl<'a> Pclntab<'a> {
    /// Parses the header. `text_addr` (the `.text` section address) stands in for a 1.18+
    /// `textStart` that reads as zero, which is what a position-independent binary holds
    /// before relocation; otherwise the header is trusted, as it is right where `.text` is not
    /// (external linking puts C start-up code before Go's `runtime.text`).
    pub(super) fn parse(data: &'a [u8], text_addr: u64) -> Result<Self, InspectError> {
        let header = data.get(..8).ok_or_else(|| truncated("header", 8, data))?;
        let magic = read_u32(header, 0).unwrap_or_default();
        let layout = match magic {
            0xffff_fffb => Layout::Go12,
            0xffff_fffa => Layout::Go116,
            0xffff_fff0 | 0xffff_fff1 => Layout::Go118,
            _ => return Err(InspectError::UnsupportedPclntabMagic { magic }),
        };
        let (pad, quantum, ptr_size) = (
            header.get(4..6),
            header.get(6).copied(),
            header.get(7).copied(),
        );
        if pad != Some(&[0, 0]) || !matches!(quantum, Some(1 | 2 | 4)) {
            return Err(bad(format!("bad header {header:02x?}")));
        }
        let ptr_size = match ptr_size {
            Some(8) => 8,
            Some(4) => 4,
            other => return Err(bad(format!("pointer size {other:?}"))),
        };
        let word = |k: usize| -> Result<usize, InspectError> {
            let at = 8 + k * ptr_size;
            let value = read_word(data, at, ptr_size)
                .ok_or_else(|| truncated("header", at + ptr_size, data))?;
            usize::try_from(value).map_err(|_| bad(format!("header word {k} is {value:#x}")))
        };
        let nfunc = word(0)?;
        let (text_start, funcnames, funcdata, functab) = match layout {
            Layout::Go12 => (0, 0, 0, 8 + ptr_size),
            Layout::Go116 => (0, word(2)?, word(6)?, word(6)?),
            Layout::Go118 => {
                let text_start = match word(2)? as u64 {
                    0 => text_addr,
                    t => t,
                };
                (text_start, word(3)?, word(7)?, word(7)?)
            }
        };
        let table = Pclntab {
            data,
            layout,
            ptr_size,
            nfunc,
            text_start,
            funcnames,
            funcdata,
            functab,
        };
        // nfunc + 1 entries must fit in the section: this bounds every loop over the table by
        // the section size, whatever the header claims.
        let field = table.field_size();
        let need = nfunc
            .checked_mul(2)
            .and_then(|n| n.checked_add(1))
            .and_then(|n| n.checked_mul(field))
            .and_then(|n| n.checked_add(functab))
            .ok_or_else(|| bad(format!("function count {nfunc}")))?;
        if need > data.len() {
            return Err(truncated("function table", need, data));
        }
        if funcnames > data.len() || funcdata > data.len() {
            return Err(bad(format!(
                "name table at {funcnames:#x} or function data at {funcdata:#x} past the end"
            )));
        }
        Ok(table)
    }

    pub(super) fn layout(&self) -> Layout {
        self.layout
    }

    fn field_size(&self) -> usize {
        match self.layout {
            Layout::Go118 => 4,
            Layout::Go12 | Layout::Go116 => self.ptr_size,
        }
    }

    /// Field `k` of the function table (entry `i` has fields `2i` and `2i + 1`).
    fn field(&self, k: usize) -> Option<u64> {
        let size = self.field_size();
        read_word(
            self.data,
            self.functab.checked_add(k.checked_mul(size)?)?,
            size,
        )
    }

    /// The entry address of function `i` (`i == nfunc` gives the end of the last one).
    fn pc(&self, i: usize) -> Option<u64> {
        let value = self.field(i.checked_mul(2)?)?;
        match self.layout {
            Layout::Go118 => self.text_start.checked_add(value),
            Layout::Go12 | Layout::Go116 => Some(value),
        }
    }

    /// Whether the first entries are what a real table holds: ascending entries that agree
    /// with their `_func` records. Used to confirm a header found by its magic alone.
    pub(super) fn looks_valid(&self) -> bool {
        self.nfunc > 0
            && (0..self.nfunc.min(32)).all(|i| {
                let (Some(entry), Some(next)) = (self.pc(i), self.pc(i + 1)) else {
                    return false;
                };
                entry < next && self.func_entry(i) == Some(entry)
            })
    }

    /// Where function `i`'s `_func` record is, if it is inside the table.
    fn func_record(&self, i: usize) -> Option<usize> {
        self.field(i.checked_mul(2)?.checked_add(1)?)
            .and_then(|off| usize::try_from(off).ok())
            .and_then(|off| self.funcdata.checked_add(off))
            .filter(|&at| at < self.data.len())
    }

    /// The entry address function `i`'s `_func` record gives (the table gives it too).
    fn func_entry(&self, i: usize) -> Option<u64> {
        let func = self.func_record(i)?;
        match self.layout {
            Layout::Go118 => read_u32(self.data, func)
                .and_then(|off| self.text_start.checked_add(u64::from(off))),
            Layout::Go12 | Layout::Go116 => read_word(self.data, func, self.ptr_size),
        }
    }

    /// The address ranges of the functions named `names`, in the same order; `None` for a
    /// name that is not in the table. One pass over the table.
    pub(super) fn find(&self, names: &[&str]) -> Result<Vec<Option<Range<u64>>>, InspectError> {
        let mut found = vec![None; names.len()];
        let name_field = match self.layout {
            Layout::Go118 => 4,
            Layout::Go12 | Layout::Go116 => self.ptr_size,
        };
        for i in 0..self.nfunc {
            let func = self
                .func_record(i)
                .ok_or_else(|| bad(format!("function {i}: _func offset out of range")))?;
            let name_off = read_u32(self.data, func + name_field)
                .ok_or_else(|| bad(format!("function {i}: _func cut short")))?;
            // nameOff is an int32; a negative one is as malformed as one past the end.
            let name_at = usize::try_from(name_off as i32)
                .ok()
                .and_then(|off| self.funcnames.checked_add(off))
                .filter(|&at| at < self.data.len())
                .ok_or_else(|| bad(format!("function {i}: name offset {name_off:#x}")))?;
            let Some(slot) = names.iter().position(|n| self.name_is(name_at, n)) else {
                continue;
            };
            let (Some(entry), Some(end)) = (self.pc(i), self.pc(i + 1)) else {
                return Err(bad(format!("function {i}: table cut short")));
            };
            let recorded = self.func_entry(i);
            if recorded != Some(entry) || end <= entry {
                return Err(bad(format!(
                    "{}: table entry {entry:#x}..{end:#x}, _func entry {recorded:#x?}",
                    names.get(slot).copied().unwrap_or_default()
                )));
            }
            if let Some(f) = found.get_mut(slot) {
                *f = Some(entry..end);
            }
            if found.iter().all(Option::is_some) {
                break;
            }
        }
        Ok(found)
    }

    /// Whether the C string at `at` is exactly `name`.
    fn name_is(&self, at: usize, name: &str) -> bool {
        let end = at + name.len();
        self.data.get(at..end) == Some(name.as_bytes()) && self.data.get(end) == Some(&0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 1.18 table: two functions `a` (0x1000..0x1010) and `bb` (0x1010..0x1030).
    fn table_118() -> Vec<u8> {
        let mut t = vec![0xf0, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        let words: [u64; 8] = [2, 0, 0x40_1000, 72, 0, 0, 0, 80];
        t.extend(words.iter().flat_map(|w| w.to_le_bytes()));
        t.extend(b"a\0bb\0\0\0\0"); // names at 72
                                    // functab at 80: (0, 40), (0x10, 48), (0x30, -)
        for v in [0u32, 40, 0x10, 48, 0x30] {
            t.extend(v.to_le_bytes());
        }
        t.resize(80 + 40, 0);
        // _func records at 80 + 40 and 80 + 48: entryOff, nameOff
        for (entry, name) in [(0u32, 0u32), (0x10, 2)] {
            t.extend(entry.to_le_bytes());
            t.extend(name.to_le_bytes());
        }
        t
    }

    #[test]
    fn finds_functions_by_name() {
        let data = table_118();
        let table = Pclntab::parse(&data, 0).unwrap();
        assert_eq!(
            table.find(&["bb", "a", "c"]).unwrap(),
            vec![Some(0x40_1010..0x40_1030), Some(0x40_1000..0x40_1010), None]
        );
    }

    #[test]
    fn consistency_check_rejects_a_lookalike() {
        let data = table_118();
        assert!(Pclntab::parse(&data, 0).unwrap().looks_valid());
        let mut lookalike = data.clone();
        lookalike[120] = 0x08; // first _func's entryOff no longer matches the table
        assert!(!Pclntab::parse(&lookalike, 0).unwrap().looks_valid());
    }

    #[test]
    fn zero_text_start_falls_back_to_text_section() {
        let mut data = table_118();
        data[24..32].fill(0);
        let table = Pclntab::parse(&data, 0x2000).unwrap();
        assert_eq!(table.find(&["a"]).unwrap(), vec![Some(0x2000..0x2010)]);
    }

    #[test]
    fn rejects_unknown_magic_and_huge_counts() {
        let mut data = table_118();
        data[0] = 0xf5;
        assert!(matches!(
            Pclntab::parse(&data, 0),
            Err(InspectError::UnsupportedPclntabMagic { magic: 0xffff_fff5 })
        ));
        let mut data = table_118();
        data[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(Pclntab::parse(&data, 0).is_err());
        let mut data = table_118();
        data[8..16].copy_from_slice(&1_000_000u64.to_le_bytes());
        assert!(matches!(
            Pclntab::parse(&data, 0),
            Err(InspectError::TruncatedPclntab { .. })
        ));
    }

    #[test]
    fn every_prefix_is_an_error_or_a_table() {
        let data = table_118();
        for cut in 0..data.len() {
            if let Ok(table) = Pclntab::parse(&data[..cut], 0) {
                let _ = table.find(&["a", "bb"]);
            }
        }
    }
}
