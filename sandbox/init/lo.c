/* Loopback up: used by sluice's network namespace pool (netns.c) and by
 * sluice-init in a namespace its clone made. Plain system calls only. */
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "init.h"

int sl__netns_lo_up(void)
{
    struct ifreq r;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), rc = -1;

    if (s < 0)
        return -1;
    memset(&r, 0, sizeof(r));
    memcpy(r.ifr_name, "lo", 3);
    if (ioctl(s, SIOCGIFFLAGS, &r) == 0) {
        r.ifr_flags |= IFF_UP;
        rc = ioctl(s, SIOCSIFFLAGS, &r);
    }
    close(s);
    return rc;
}
