// Webshells: server pages that run code or commands taken from the request.

rule iw_webshell_php
{
    meta:
        id = "IW-MAL-WEBSHELL"
        title = "Webshell (PHP, JSP or ASP.NET page running request input)"
        severity = "critical"
        description = "PHP that evaluates or executes request input: eval/assert of $_POST/$_GET (optionally decoded), system/exec/passthru of a request value, a request value called as a function, or eval of a doubly encoded blob"

    strings:
        $eval_input = /\b(eval|assert)\s*\(\s*@?\s*((base64_decode|gzinflate|gzuncompress|gzdecode|str_rot13|rawurldecode|urldecode|stripslashes|hex2bin)\s*\(\s*){0,4}@?\$_(POST|GET|REQUEST|COOKIE|SERVER)\s*\[/ nocase
        $exec_input = /\b(system|exec|passthru|shell_exec|popen|proc_open|pcntl_exec)\s*\(\s*@?\s*((base64_decode|stripslashes|urldecode)\s*\(\s*){0,2}\$_(POST|GET|REQUEST|COOKIE)\s*\[/ nocase
        $call_input = /\$_(POST|GET|REQUEST|COOKIE)\s*\[\s*["'][^"'\]]{1,32}["']\s*\]\s*\(\s*\$_(POST|GET|REQUEST|COOKIE)\s*\[/ nocase
        $backtick = /`\s*\$_(POST|GET|REQUEST|COOKIE)\s*\[[^\]`]{1,40}\]\s*`/
        $packed = /\beval\s*\(\s*(gzinflate|gzuncompress|str_rot13)\s*\(\s*base64_decode\s*\(/ nocase

    condition:
        not iw_binary_executable and any of them
}

rule iw_webshell_jsp
{
    meta:
        id = "IW-MAL-WEBSHELL"
        title = "Webshell (PHP, JSP or ASP.NET page running request input)"
        severity = "critical"
        description = "A JSP page that runs a command taken from a request parameter (Runtime.exec or ProcessBuilder)"

    strings:
        $direct = /Runtime\.getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(\s*request\.getParameter\s*\(/
        $page = "<%"
        $param = /request\.getParameter\s*\(/
        $exec = /Runtime\.getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(/
        $builder = /new\s+ProcessBuilder\s*\(/

    condition:
        not iw_binary_executable and ($direct or ($page and $param and ($exec or $builder)))
}

rule iw_webshell_aspx
{
    meta:
        id = "IW-MAL-WEBSHELL"
        title = "Webshell (PHP, JSP or ASP.NET page running request input)"
        severity = "critical"
        description = "An ASP/ASP.NET page that evaluates request input (China Chopper style) or starts a process with it"

    strings:
        $chopper = /\beval\s*\(\s*Request(\.Item)?\s*\[\s*["'][^"'\]]{1,32}["']\s*\]\s*,\s*["']unsafe["']/ nocase
        $classic = /\b(eval|execute)\s*\(?\s*request\s*\(\s*["'][^"')]{1,32}["']\s*\)/ nocase
        $start_input = /Process\.Start\s*\([^\n;]{0,160}Request(\.Form|\.QueryString|\.Item|\.Params)?\s*[\[(]/ nocase
        $page = /<%@\s*(Page|WebHandler)\b/ nocase
        $psi = /\bProcessStartInfo\s*\(/ nocase
        $input = /Request(\.Form|\.QueryString|\.Item|\.Params)?\s*\[\s*["']/ nocase

    condition:
        not iw_binary_executable and ($chopper or $classic or $start_input or ($page and $psi and $input))
}
