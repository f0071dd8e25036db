/*
 * ke_host.c — see ke_host.h.
 */
#include "ke_host.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

void ke_host_ipv4(char *buf, size_t cap)
{
    struct ifaddrs *ifs = NULL;
    if (cap)
        buf[0] = '\0';
    if (cap < INET_ADDRSTRLEN || getifaddrs(&ifs) != 0)
        return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && (i->ifa_flags & IFF_UP) &&
            !(i->ifa_flags & IFF_LOOPBACK)) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf,
                      (socklen_t)cap);
            break;
        }
    freeifaddrs(ifs);
}
