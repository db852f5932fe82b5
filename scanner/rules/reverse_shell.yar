// Reverse-shell one-liners in scripts: a shell whose standard streams go to a network
// connection. Compiled binaries are left out (a shell binary holds `/dev/tcp` and a
// Python interpreter holds `socket` and `dup2` as strings).

rule iw_revshell_dev_tcp
{
    meta:
        id = "IW-MAL-REVERSE-SHELL"
        title = "Reverse shell one-liner"
        severity = "critical"
        description = "An interactive shell redirected to a bash /dev/tcp or /dev/udp socket"

    strings:
        $interactive = /\b(ba|z|k)?sh\s+-i\s*(>&|&>)\s*\/dev\/(tcp|udp)\//
        $stdin_back = /\/dev\/(tcp|udp)\/[0-9A-Za-z.\-]{1,253}\/[0-9]{1,5}\s*0>&1/
        $exec_fd = /\bexec\s+[0-9]{1,3}\s*<>\s*\/dev\/(tcp|udp)\//

    condition:
        not iw_binary_executable and any of them
}

rule iw_revshell_netcat
{
    meta:
        id = "IW-MAL-REVERSE-SHELL"
        title = "Reverse shell one-liner"
        severity = "critical"
        description = "netcat or ncat running a shell for a connection (-e / -c /bin/sh)"

    strings:
        $nc_e = /\bnc(at)?(\.traditional|\.openbsd)?\s+(-[A-Za-z]{1,8}\s+){0,6}-[ec]\s*\/(usr\/)?bin\/(ba|z|da|k)?sh\b/
        $nc_e_host = /\bnc(at)?(\.traditional|\.openbsd)?\s+[0-9A-Za-z.\-]{1,253}\s+[0-9]{1,5}\s+-[ec]\s*\/(usr\/)?bin\/(ba|z|da|k)?sh\b/

    condition:
        not iw_binary_executable and any of them
}

rule iw_revshell_fifo
{
    meta:
        id = "IW-MAL-REVERSE-SHELL"
        title = "Reverse shell one-liner"
        severity = "critical"
        description = "A named pipe (mkfifo / mknod p) looping a shell through netcat, openssl or telnet"

    strings:
        $mkfifo = /\bmkfifo\s+[^\s;|&]{1,128}\s*(;|&&)\s*(cat|nc|ncat|tail)\s[^\n]{0,160}\|\s*\/(usr\/)?bin\/(ba|z|da|k)?sh\s+-i/
        $mkfifo_sh_first = /\bmkfifo\s+[^\s;|&]{1,128}\s*(;|&&)\s*\/(usr\/)?bin\/(ba|z|da|k)?sh\s+-i\s*<\s*[^\s;|&]{1,128}\s*2?>&1\s*\|\s*(nc|ncat|openssl\s+s_client|telnet)\s/
        $mknod = /\bmknod\s+[^\s;|&]{1,128}\s+p\s*(;|&&)[^\n]{0,200}\/(usr\/)?bin\/(ba|z|da|k)?sh\b[^\n]{0,200}\b(nc|ncat|telnet)\s/

    condition:
        not iw_binary_executable and any of them
}

rule iw_revshell_python
{
    meta:
        id = "IW-MAL-REVERSE-SHELL"
        title = "Reverse shell one-liner"
        severity = "critical"
        description = "Python that connects a socket, duplicates it onto the standard streams and starts a shell"

    strings:
        $socket = /socket\.socket\s*\(/
        $connect = /\.connect\s*\(\s*\(/
        $dup2 = /os\.dup2\s*\(\s*[A-Za-z_][A-Za-z0-9_.]{0,64}\.fileno\s*\(\s*\)\s*,/
        $shell = /(pty\.spawn|subprocess\.(call|Popen|run)|os\.(system|exec[lv]p?e?))\s*\(\s*\[?\s*["']\/(usr\/)?bin\/(ba|z|da|k)?sh\b/

    condition:
        not iw_binary_executable and all of them
}

rule iw_revshell_perl
{
    meta:
        id = "IW-MAL-REVERSE-SHELL"
        title = "Reverse shell one-liner"
        severity = "critical"
        description = "Perl that opens a socket onto STDIN/STDOUT and executes a shell"

    strings:
        $socket = /\b(use\s+Socket\b|IO::Socket::INET\s*->\s*new)/
        $dup = /open\s*\(\s*STD(IN|OUT|ERR)\s*,\s*["']?\s*[<>+]{0,2}\s*&/
        $exec = /\b(exec|system)\s*\(?\s*["']\/(usr\/)?bin\/(ba|z|da|k)?sh\b/

    condition:
        not iw_binary_executable and all of them
}

rule iw_revshell_php
{
    meta:
        id = "IW-MAL-REVERSE-SHELL"
        title = "Reverse shell one-liner"
        severity = "critical"
        description = "PHP that opens a socket (fsockopen) and executes a shell on its descriptor"

    strings:
        $sock = /\bfsockopen\s*\(/ nocase
        $exec = /\b(exec|shell_exec|system|passthru|popen|proc_open)\s*\(\s*["']\/(usr\/)?bin\/(ba|z|da|k)?sh\s+-i\s*<&\s*[0-9]/ nocase

    condition:
        not iw_binary_executable and all of them
}

rule iw_revshell_ruby
{
    meta:
        id = "IW-MAL-REVERSE-SHELL"
        title = "Reverse shell one-liner"
        severity = "critical"
        description = "Ruby that opens a TCPSocket and executes a shell on its descriptor"

    strings:
        $sock = /TCPSocket\.(open|new)\s*\(/
        $exec = /\bexec\s*\(?\s*(sprintf\s*\(\s*)?["']\/(usr\/)?bin\/(ba|z|da|k)?sh\s+-i\s*<&/

    condition:
        not iw_binary_executable and all of them
}

rule iw_revshell_socat
{
    meta:
        id = "IW-MAL-REVERSE-SHELL"
        title = "Reverse shell one-liner"
        severity = "critical"
        description = "socat joining a TCP or TLS connection to a shell (exec:/bin/sh, system:bash)"

    strings:
        $shell_then_tcp = /\bsocat\s[^\n]{0,160}\b(exec|system):["']?(\/(usr\/)?bin\/)?(ba|z|da|k)?sh\b[^\n]{0,160}\b(tcp[46]?|openssl)(-connect)?:/ nocase
        $tcp_then_shell = /\bsocat\s[^\n]{0,160}\b(tcp[46]?|openssl)(-connect)?:[^\n]{0,160}\b(exec|system):["']?(\/(usr\/)?bin\/)?(ba|z|da|k)?sh\b/ nocase

    condition:
        not iw_binary_executable and any of them
}
