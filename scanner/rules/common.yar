// Helpers shared by the bundled rules (compiled first, in the same namespace).

// A compiled executable or library: ELF, PE (MZ), Mach-O (32/64-bit, either byte
// order, and fat binaries).
private rule iw_binary_executable
{
    condition:
        uint32(0) == 0x464c457f or
        uint16(0) == 0x5a4d or
        uint32(0) == 0xfeedface or uint32(0) == 0xcefaedfe or
        uint32(0) == 0xfeedfacf or uint32(0) == 0xcffaedfe or
        (uint32be(0) == 0xcafebabe and uint32be(4) < 20)
}
