/*
 * FlushGuard SEH copy shim (DESIGN.md section 3).
 *
 * The port's message callback receives raw user-mode addresses that Filter Manager has
 * probed but not captured: the pages can be freed or protected by another thread of the
 * caller at any moment. Rust has no structured exception handling, so every access to
 * user memory goes through these two C routines, which turn the resulting fault into an
 * NTSTATUS instead of a bug check.
 *
 * Rules this file must keep (tests guard both: `cargo xtask seh-test` runs this very
 * object under wine, and checks the unwind info of flushguard.sys):
 *   - The byte loop lives in a separate noinline function called from inside __try.
 *     clang drops a __try whose body faults inline, leaving no handler at all.
 *   - No headers: NTSTATUS and SIZE_T are declared here, so the object builds with
 *     clang --target=x86_64-pc-windows-msvc on Linux as with cl.exe on Windows.
 *   - The caller (driver/src/user_buffer.rs) has already checked that the user range
 *     lies below MmUserProbeAddress; SEH does not make kernel addresses safe.
 *
 * IRQL: callable at APC_LEVEL or below (user memory may be paged out). The faults
 * handled are STATUS_ACCESS_VIOLATION and STATUS_IN_PAGE_ERROR; any other exception
 * continues the search (a real bug must not be hidden).
 */

typedef long NTSTATUS;
typedef unsigned long long SIZE_T;

#define STATUS_SUCCESS ((NTSTATUS)0x00000000L)
#define STATUS_ACCESS_VIOLATION ((NTSTATUS)0xC0000005L)
#define STATUS_IN_PAGE_ERROR ((NTSTATUS)0xC0000006L)
#define EXCEPTION_EXECUTE_HANDLER 1
#define EXCEPTION_CONTINUE_SEARCH 0

unsigned long _exception_code(void);

/* Copies len bytes one at a time. volatile keeps the compiler from replacing the loop
 * with a memcpy call or merging it into the caller. */
__declspec(noinline) static void fg_copy_bytes(volatile unsigned char *dst,
                                               const volatile unsigned char *src,
                                               SIZE_T len)
{
    SIZE_T i;
    for (i = 0; i < len; i++) {
        dst[i] = src[i];
    }
}

/* Exception filter: records the code and handles only memory-access faults. */
static int fg_copy_filter(unsigned long code, NTSTATUS *status)
{
    if (code == (unsigned long)STATUS_ACCESS_VIOLATION ||
        code == (unsigned long)STATUS_IN_PAGE_ERROR) {
        *status = (NTSTATUS)code;
        return EXCEPTION_EXECUTE_HANDLER;
    }
    return EXCEPTION_CONTINUE_SEARCH;
}

/*
 * fg_copy_from_user: copies len bytes from the user address user_src into the kernel
 * buffer kernel_dst. Returns STATUS_SUCCESS, or STATUS_ACCESS_VIOLATION /
 * STATUS_IN_PAGE_ERROR if reading user memory faulted (kernel_dst then holds a prefix).
 */
__declspec(noinline) NTSTATUS fg_copy_from_user(void *kernel_dst, const void *user_src,
                                                SIZE_T len)
{
    NTSTATUS status = STATUS_SUCCESS;
    __try {
        fg_copy_bytes((volatile unsigned char *)kernel_dst,
                      (const volatile unsigned char *)user_src, len);
    } __except (fg_copy_filter(_exception_code(), &status)) {
        /* status was set by the filter. */
    }
    return status;
}

/*
 * fg_copy_to_user: copies len bytes from the kernel buffer kernel_src to the user
 * address user_dst. Returns STATUS_SUCCESS, or STATUS_ACCESS_VIOLATION /
 * STATUS_IN_PAGE_ERROR if writing user memory faulted (a prefix may have been written).
 */
__declspec(noinline) NTSTATUS fg_copy_to_user(void *user_dst, const void *kernel_src,
                                              SIZE_T len)
{
    NTSTATUS status = STATUS_SUCCESS;
    __try {
        fg_copy_bytes((volatile unsigned char *)user_dst,
                      (const volatile unsigned char *)kernel_src, len);
    } __except (fg_copy_filter(_exception_code(), &status)) {
        /* status was set by the filter. */
    }
    return status;
}
