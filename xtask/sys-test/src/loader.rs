//! The PE loader: maps the signed `flushguard.sys` into this process the way the
//! Windows memory manager maps a driver image, at a base other than its preferred one.
//!
//! Steps: parse with the `object` crate -> require the Authenticode certificate table
//! (`IMAGE_DIRECTORY_ENTRY_SECURITY`) -> allocate `SizeOfImage` bytes (page aligned,
//! wherever the OS puts them: never the preferred base) -> copy headers and sections
//! -> apply every base relocation (`IMAGE_REL_BASED_DIR64`; any other type fails) ->
//! bind every import by name through the caller's resolver (a missing one fails the
//! load naming DLL and routine) -> set each section's protection from its
//! characteristics (headers read-only).

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use object::pe::{
    IMAGE_DIRECTORY_ENTRY_SECURITY, IMAGE_REL_BASED_ABSOLUTE, IMAGE_REL_BASED_DIR64,
    IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_READ, IMAGE_SCN_MEM_WRITE,
};
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, Import, PeFile64};
use object::LittleEndian as LE;

/// One mapped section, for the summary.
#[derive(Clone, Debug)]
pub struct SectionInfo {
    /// Section name, e.g. `.text`.
    pub name: String,
    /// RVA.
    pub rva: u32,
    /// `VirtualSize`, bytes.
    pub virtual_size: u32,
    /// `SizeOfRawData`, bytes.
    pub raw_size: u32,
    /// Protection applied, `r-x` style.
    pub protection: String,
}

/// One bound import.
#[derive(Clone, Debug)]
pub struct BoundImport {
    /// DLL as the import directory names it.
    pub dll: String,
    /// Routine (or data) name.
    pub name: String,
    /// Address bound into the IAT.
    pub address: usize,
}

/// The image mapped into this process.
pub struct LoadedImage {
    /// Keeps the mapping alive (and unmaps it on drop).
    _mapping: region::Allocation,
    /// Where the image was mapped.
    pub base: usize,
    /// `OptionalHeader.ImageBase`.
    pub preferred_base: u64,
    /// `SizeOfImage`, bytes.
    pub size: usize,
    /// `AddressOfEntryPoint` RVA.
    pub entry_rva: u32,
    /// Sections as mapped.
    pub sections: Vec<SectionInfo>,
    /// Base relocations applied.
    pub relocations: usize,
    /// Imports bound.
    pub imports: Vec<BoundImport>,
    /// Authenticode certificate table size, bytes.
    pub certificate_bytes: u32,
}

impl LoadedImage {
    /// True if `address` lies inside the mapped image.
    pub fn contains(&self, address: usize) -> bool {
        address >= self.base && address < self.base + self.size
    }

    /// The entry point's address.
    pub fn entry(&self) -> usize {
        self.base + self.entry_rva as usize
    }
}

fn section_name(raw: &[u8; 8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn protection_of(characteristics: u32) -> (region::Protection, String) {
    let r = characteristics & IMAGE_SCN_MEM_READ != 0;
    let w = characteristics & IMAGE_SCN_MEM_WRITE != 0;
    let x = characteristics & IMAGE_SCN_MEM_EXECUTE != 0;
    let protection = match (w, x) {
        (false, false) => region::Protection::READ,
        (true, false) => region::Protection::READ_WRITE,
        (false, true) => region::Protection::READ_EXECUTE,
        (true, true) => region::Protection::READ_WRITE_EXECUTE,
    };
    let text = format!(
        "{}{}{}",
        if r || w || x { 'r' } else { '-' },
        if w { 'w' } else { '-' },
        if x { 'x' } else { '-' }
    );
    (protection, text)
}

/// Loads `bytes` (a PE32+ driver image) at a non-preferred base.
///
/// `resolve(dll, name)` returns the address to bind for an import (a routine, or the
/// address of a variable for a data import such as `MmUserProbeAddress`).
///
/// # Errors
/// Not a PE32+ image; no certificate table (not the signed package file); a base
/// relocation of a type other than DIR64/ABSOLUTE or outside the image; an import by
/// ordinal or one the resolver lacks (all of them listed as `DLL!routine`); the
/// mapping landed on the preferred base; mapping or protecting memory failed.
pub fn load(bytes: &[u8], resolve: impl Fn(&str, &str) -> Option<usize>) -> Result<LoadedImage> {
    let file = PeFile64::parse(bytes).context("parsing the PE32+ image")?;
    let nt = file.nt_headers();
    let optional = nt.optional_header();
    let preferred_base = optional.image_base();
    let size = optional.size_of_image() as usize;
    let headers_size = optional.size_of_headers() as usize;
    let entry_rva = optional.address_of_entry_point();
    let directories = file.data_directories();

    let certificate_bytes = directories
        .get(IMAGE_DIRECTORY_ENTRY_SECURITY)
        .map(|d| d.size.get(LE))
        .unwrap_or(0);
    if certificate_bytes == 0 {
        bail!(
            "the image has no Authenticode certificate table (IMAGE_DIRECTORY_ENTRY_SECURITY \
             is empty): not the signed package file"
        );
    }

    let page = region::page::size();
    let mapping = region::alloc(size.div_ceil(page) * page, region::Protection::READ_WRITE)
        .context("allocating memory for the image")?;
    let base = mapping.as_ptr::<u8>() as usize;
    if base as u64 == preferred_base {
        bail!("the image landed on its preferred base 0x{preferred_base:X}: relocations untested");
    }

    // Build the mapped view in ordinary memory, then copy it in once.
    let mut view = vec![0u8; size];
    let headers = bytes
        .get(..headers_size)
        .context("SizeOfHeaders exceeds the file")?;
    view[..headers_size].copy_from_slice(headers);
    let section_table = file.section_table();
    let mut sections = Vec::new();
    for section in section_table.iter() {
        let rva = section.virtual_address.get(LE);
        let virtual_size = section.virtual_size.get(LE);
        let raw_size = section.size_of_raw_data.get(LE);
        let raw_offset = section.pointer_to_raw_data.get(LE) as usize;
        let copy = raw_size.min(virtual_size.max(raw_size)) as usize;
        let end = rva as usize + virtual_size.max(raw_size) as usize;
        if end > size + page {
            bail!(
                "section {} ends at RVA 0x{end:X}, beyond SizeOfImage",
                section_name(&section.name)
            );
        }
        if copy > 0 {
            let data = bytes
                .get(raw_offset..raw_offset + copy)
                .context("section raw data exceeds the file")?;
            let dst_end = (rva as usize + copy).min(size);
            view[rva as usize..dst_end].copy_from_slice(&data[..dst_end - rva as usize]);
        }
        let (_, protection) = protection_of(section.characteristics.get(LE));
        sections.push(SectionInfo {
            name: section_name(&section.name),
            rva,
            virtual_size,
            raw_size,
            protection,
        });
    }

    // Base relocations.
    let delta = (base as u64).wrapping_sub(preferred_base);
    let mut relocations = 0usize;
    if let Some(mut blocks) = directories
        .relocation_blocks(bytes, &section_table)
        .context("reading the base relocation directory")?
    {
        while let Some(block) = blocks.next().context("reading a relocation block")? {
            for relocation in block {
                match relocation.typ {
                    IMAGE_REL_BASED_ABSOLUTE => {}
                    IMAGE_REL_BASED_DIR64 => {
                        let at = relocation.virtual_address as usize;
                        let slot = view.get_mut(at..at + 8).with_context(|| {
                            format!("relocation at RVA 0x{at:X} outside the image")
                        })?;
                        let mut value = [0u8; 8];
                        value.copy_from_slice(slot);
                        let fixed = u64::from_le_bytes(value).wrapping_add(delta);
                        slot.copy_from_slice(&fixed.to_le_bytes());
                        relocations += 1;
                    }
                    other => bail!(
                        "unsupported base relocation type {other} at RVA 0x{:X}",
                        relocation.virtual_address
                    ),
                }
            }
        }
    }
    if relocations == 0 && delta != 0 {
        bail!(
            "the image has no base relocations (stripped?): it cannot run at 0x{base:X} \
             instead of its preferred base 0x{preferred_base:X}"
        );
    }

    // Imports.
    let mut imports = Vec::new();
    let mut missing = String::new();
    if let Some(table) = file
        .import_table()
        .context("reading the import directory")?
    {
        let mut descriptors = table.descriptors().context("reading import descriptors")?;
        while let Some(descriptor) = descriptors.next()? {
            let dll = String::from_utf8_lossy(table.name(descriptor.name.get(LE))?).into_owned();
            let lookup = match descriptor.original_first_thunk.get(LE) {
                0 => descriptor.first_thunk.get(LE),
                rva => rva,
            };
            let iat = descriptor.first_thunk.get(LE) as usize;
            let mut thunks = table.thunks(lookup)?;
            let mut index = 0usize;
            while let Some(thunk) = thunks.next::<object::pe::ImageNtHeaders64>()? {
                let name = match table.import::<object::pe::ImageNtHeaders64>(thunk)? {
                    Import::Name(_hint, name) => String::from_utf8_lossy(name).into_owned(),
                    Import::Ordinal(ordinal) => {
                        let _ = write!(missing, " {dll}!#{ordinal} (by ordinal)");
                        index += 1;
                        continue;
                    }
                };
                match resolve(&dll, &name) {
                    Some(address) => {
                        let at = iat + index * 8;
                        let slot = view.get_mut(at..at + 8).with_context(|| {
                            format!("IAT slot at RVA 0x{at:X} outside the image")
                        })?;
                        slot.copy_from_slice(&(address as u64).to_le_bytes());
                        imports.push(BoundImport {
                            dll: dll.clone(),
                            name,
                            address,
                        });
                    }
                    None => {
                        let _ = write!(missing, " {dll}!{name}");
                    }
                }
                index += 1;
            }
        }
    }
    if !missing.is_empty() {
        bail!("imports the harness does not implement:{missing}");
    }
    let _ = nt.file_header();

    let target = mapping.as_ptr::<u8>().cast_mut();
    // SAFETY: `target` is the start of a fresh read-write mapping of at least `size`
    // bytes owned by `mapping`; `view` is a distinct heap buffer of exactly `size` bytes.
    unsafe { std::ptr::copy_nonoverlapping(view.as_ptr(), target, size) };

    let headers_len = headers_size.div_ceil(page) * page;
    // SAFETY: the headers' pages lie inside `mapping`, which nothing else references yet.
    unsafe { region::protect(target, headers_len, region::Protection::READ) }
        .context("protecting the headers")?;
    for section in section_table.iter() {
        let rva = section.virtual_address.get(LE) as usize;
        let len = (section.virtual_size.get(LE) as usize)
            .max(1)
            .div_ceil(page)
            * page;
        if rva % page != 0 || rva + len > mapping.len() {
            bail!(
                "section {} (RVA 0x{rva:X}) is not page aligned: cannot protect it alone",
                section_name(&section.name)
            );
        }
        let (protection, _) = protection_of(section.characteristics.get(LE));
        let start = target.wrapping_add(rva);
        // SAFETY: `[start, start + len)` lies inside `mapping` (checked above); the image
        // code has not run yet, so no reference into it exists.
        unsafe { region::protect(start, len, protection) }
            .with_context(|| format!("protecting section {}", section_name(&section.name)))?;
    }

    Ok(LoadedImage {
        _mapping: mapping,
        base,
        preferred_base,
        size,
        entry_rva,
        sections,
        relocations,
        imports,
        certificate_bytes,
    })
}
