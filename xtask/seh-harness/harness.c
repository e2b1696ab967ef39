/*
 * FlushGuard SEH shim harness: a CRT-less Windows console program that links the very
 * seh_shim.lib the driver links (from the driver's own build) and calls
 * fg_copy_from_user / fg_copy_to_user with good and bad addresses. `cargo xtask
 * seh-test` builds it with clang + rust-lld and runs it under wine.
 *
 * Output: one line per case, "PASS <case>" or "FAIL <case> ...". Exit code: number of
 * failed cases (0 = all passed). A crash (the shim's __try dropped) ends the process with
 * an unhandled-exception status instead, which the runner also reports.
 */

typedef long NTSTATUS;
typedef unsigned long long SIZE_T;
typedef unsigned long DWORD;
typedef int BOOL;
typedef void *HANDLE;

#define STATUS_SUCCESS ((NTSTATUS)0x00000000L)
#define STATUS_ACCESS_VIOLATION ((NTSTATUS)0xC0000005L)
#define STD_OUTPUT_HANDLE ((DWORD)-11)
#define MEM_COMMIT 0x00001000
#define MEM_RESERVE 0x00002000
#define PAGE_READWRITE 0x04
#define PAGE_NOACCESS 0x01
#define PAGE_READONLY 0x02
#define PAGE_SIZE 4096

__declspec(dllimport) HANDLE __stdcall GetStdHandle(DWORD handle);
__declspec(dllimport) BOOL __stdcall WriteFile(HANDLE file, const void *buffer, DWORD length,
                                               DWORD *written, void *overlapped);
__declspec(dllimport) void __stdcall ExitProcess(unsigned int code);
__declspec(dllimport) void *__stdcall VirtualAlloc(void *address, SIZE_T size, DWORD type,
                                                   DWORD protect);
__declspec(dllimport) BOOL __stdcall VirtualProtect(void *address, SIZE_T size, DWORD protect,
                                                    DWORD *old_protect);

/* The shim under test (driver/seh/seh_copy.c). */
NTSTATUS fg_copy_from_user(void *kernel_dst, const void *user_src, SIZE_T len);
NTSTATUS fg_copy_to_user(void *user_dst, const void *kernel_src, SIZE_T len);

/* clang may emit calls to these for array initialisation; there is no CRT. */
void *memset(void *dst, int value, SIZE_T len)
{
    volatile unsigned char *d = dst;
    while (len--) {
        *d++ = (unsigned char)value;
    }
    return dst;
}

void *memcpy(void *dst, const void *src, SIZE_T len)
{
    volatile unsigned char *d = dst;
    const volatile unsigned char *s = src;
    while (len--) {
        *d++ = *s++;
    }
    return dst;
}

static HANDLE out;
static unsigned int failures;

static void put(const char *text)
{
    DWORD length = 0;
    DWORD written;
    while (text[length]) {
        length++;
    }
    WriteFile(out, text, length, &written, 0);
}

static void put_hex(unsigned long value)
{
    char digits[11];
    int i;
    digits[0] = '0';
    digits[1] = 'x';
    for (i = 0; i < 8; i++) {
        digits[2 + i] = "0123456789ABCDEF"[(value >> (28 - 4 * i)) & 0xF];
    }
    digits[10] = 0;
    put(digits);
}

static void expect_status(const char *name, NTSTATUS got, NTSTATUS want)
{
    if (got == want) {
        put("PASS ");
        put(name);
        put(" status=");
        put_hex((unsigned long)got);
        put("\n");
    } else {
        failures++;
        put("FAIL ");
        put(name);
        put(" status=");
        put_hex((unsigned long)got);
        put(" expected=");
        put_hex((unsigned long)want);
        put("\n");
    }
}

static void expect_bytes(const char *name, const unsigned char *got, const unsigned char *want,
                         SIZE_T len)
{
    SIZE_T i;
    for (i = 0; i < len; i++) {
        if (got[i] != want[i]) {
            failures++;
            put("FAIL ");
            put(name);
            put(" bytes differ\n");
            return;
        }
    }
    put("PASS ");
    put(name);
    put("\n");
}

static const unsigned char read_only_bytes[16] = "read-only data!";

void __stdcall harness_main(void)
{
    unsigned char source[64];
    unsigned char target[64];
    unsigned char *pages;
    DWORD old;
    int i;

    out = GetStdHandle(STD_OUTPUT_HANDLE);
    for (i = 0; i < 64; i++) {
        source[i] = (unsigned char)(i * 7 + 1);
        target[i] = 0;
    }

    /* Faulting reads and writes come back as STATUS_ACCESS_VIOLATION. */
    expect_status("copy_from_user(0x10)", fg_copy_from_user(target, (const void *)0x10, 8),
                  STATUS_ACCESS_VIOLATION);
    expect_status("copy_to_user(0x10)", fg_copy_to_user((void *)0x10, source, 8),
                  STATUS_ACCESS_VIOLATION);
    expect_status("copy_to_user(read-only page)",
                  fg_copy_to_user((void *)read_only_bytes, source, 8), STATUS_ACCESS_VIOLATION);

    /* Valid copies succeed and move the bytes. */
    expect_status("copy_from_user(valid)", fg_copy_from_user(target, source, 64), STATUS_SUCCESS);
    expect_bytes("copy_from_user(valid) bytes", target, source, 64);
    for (i = 0; i < 64; i++) {
        target[i] = 0;
    }
    expect_status("copy_to_user(valid)", fg_copy_to_user(target, source, 64), STATUS_SUCCESS);
    expect_bytes("copy_to_user(valid) bytes", target, source, 64);
    expect_status("copy_from_user(length 0, bad address)",
                  fg_copy_from_user(target, (const void *)0x10, 0), STATUS_SUCCESS);

    /* A buffer that runs from a readable page into a no-access page: the copy faults
     * part-way, returns STATUS_ACCESS_VIOLATION, and the readable prefix was copied. */
    pages = VirtualAlloc(0, 2 * PAGE_SIZE, MEM_COMMIT | MEM_RESERVE, PAGE_READWRITE);
    if (pages == 0 || !VirtualProtect(pages + PAGE_SIZE, PAGE_SIZE, PAGE_NOACCESS, &old)) {
        failures++;
        put("FAIL setup of guard page\n");
    } else {
        for (i = 0; i < 8; i++) {
            pages[PAGE_SIZE - 8 + i] = (unsigned char)(0xA0 + i);
        }
        for (i = 0; i < 16; i++) {
            target[i] = 0;
        }
        expect_status("copy_from_user(straddling no-access page)",
                      fg_copy_from_user(target, pages + PAGE_SIZE - 8, 16),
                      STATUS_ACCESS_VIOLATION);
        expect_bytes("copy_from_user(straddling) prefix", target, pages + PAGE_SIZE - 8, 8);
        expect_status("copy_to_user(straddling no-access page)",
                      fg_copy_to_user(pages + PAGE_SIZE - 8, source, 16), STATUS_ACCESS_VIOLATION);
        VirtualProtect(pages, PAGE_SIZE, PAGE_READONLY, &old);
        expect_status("copy_to_user(page made read-only)", fg_copy_to_user(pages, source, 4),
                      STATUS_ACCESS_VIOLATION);
    }

    put(failures == 0 ? "ALL PASSED\n" : "SOME FAILED\n");
    ExitProcess(failures);
}
