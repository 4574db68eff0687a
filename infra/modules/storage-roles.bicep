// Data-plane roles on the loop's data account, each at the narrowest scope the API allows: one container or
// one queue, never the account (issue 20, item 6). main.bicep lists the apps' grants (loopBlobGrants,
// loopQueueGrants): which app's identity, which built-in role, which container or queue, and why.
// The Azure ML workspace (Studio previews items and data assets through the identity-based items datastore)
// and the training compute cluster's identity (the job mounts the items datastore and reads the manifest data
// asset) read the items and manifests containers only.

param storageAccountName string

@description('App (collector, selector, labels, dispatch) -> principal (object) id of its user-assigned identity.')
param principals object

@description('One { app, role, container } per grant: the role is assigned on that container only.')
param blobGrants array

@description('One { app, role, queue } per grant: the role is assigned on that queue only.')
param queueGrants array

@description('Principal id of the Azure ML workspace\'s system-assigned identity; empty: no grant.')
param workspacePrincipalId string = ''

@description('Principal id of the training compute cluster\'s user-assigned identity; empty: no grant.')
param computePrincipalId string = ''

@description('The containers the workspace and the training compute read (the items datastore, the manifests).')
param trainingContainers array = []

// Built-in role definition ids (stable across tenants), by the names main.bicep's grants use.
var roleIds = {
  'Storage Blob Data Owner': 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  'Storage Blob Data Contributor': 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  'Storage Blob Data Reader': '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  'Storage Queue Data Contributor': '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  'Storage Queue Data Reader': '19e7f393-937e-4f77-808e-94535e297925'
  'Storage Queue Data Message Processor': '8a0f0c08-91a1-4084-bc3d-661d67233fed'
  'Storage Queue Data Message Sender': 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
}
var storageBlobDataReader = roleIds['Storage Blob Data Reader']

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource grantContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for g in blobGrants: {
  parent: blobService
  name: g.container
}]

resource grantQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = [for g in queueGrants: {
  parent: queueService
  name: g.queue
}]

resource blobAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (g, i) in blobGrants: {
  scope: grantContainers[i]
  name: guid(grantContainers[i].id, principals[g.app], roleIds[g.role])
  properties: {
    principalId: principals[g.app]
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds[g.role])
  }
}]

resource queueAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (g, i) in queueGrants: {
  scope: grantQueues[i]
  name: guid(grantQueues[i].id, principals[g.app], roleIds[g.role])
  properties: {
    principalId: principals[g.app]
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds[g.role])
  }
}]

resource trainingReadContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [for c in trainingContainers: {
  parent: blobService
  name: c
}]

resource workspaceReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (c, i) in (empty(workspacePrincipalId) ? [] : trainingContainers): {
  scope: trainingReadContainers[i]
  name: guid(trainingReadContainers[i].id, workspacePrincipalId, storageBlobDataReader)
  properties: {
    principalId: workspacePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}]

// The training job reads with the compute's identity (identity-based datastore, no stored credential):
// the items (mounted from the items datastore) and the manifest (a uri_file in the manifests container).
resource computeReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (c, i) in (empty(computePrincipalId) ? [] : trainingContainers): {
  scope: trainingReadContainers[i]
  name: guid(trainingReadContainers[i].id, computePrincipalId, storageBlobDataReader)
  properties: {
    principalId: computePrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}]
