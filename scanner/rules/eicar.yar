// The EICAR anti-virus test file: the 68-byte EICAR string at offset 0, optionally
// followed by whitespace, in a file of at most 128 bytes (what the EICAR standard
// allows). The pattern leaves two bytes of the string as wildcards, which the condition
// checks ('E' at 28, 'U' at 50): neither this file nor the scanner binary that bundles it
// holds the test string, so anti-virus tools do not flag the scanner.

rule iw_eicar_test_file
{
    meta:
        id = "IW-MAL-EICAR"
        title = "EICAR anti-virus test file"
        severity = "high"
        description = "The EICAR test string at the start of a file of at most 128 bytes: harmless, but anti-virus tools quarantine it and it shows an image was built from unvetted content"

    strings:
        $eicar = { 58 35 4F 21 50 25 40 41 50 5B 34 5C 50 5A 58 35 34 28 50 5E 29 37 43 43 29 37 7D 24 ?? 49 43 41 52 2D 53 54 41 4E 44 41 52 44 2D 41 4E 54 49 56 49 52 ?? 53 2D 54 45 53 54 2D 46 49 4C 45 21 24 48 2B 48 2A }

    condition:
        filesize <= 128 and $eicar at 0 and uint8(28) == 0x45 and uint8(50) == 0x55
}
